"""NumPy/SciPy backend: the reference backend, always available.

Uses the shared array code of :mod:`convkit.backends._base` and swaps in SciPy's compiled
kernels where they compute the same thing:

* 1-D direct: ``numpy.convolve`` (any dtype; integer arithmetic wraps exactly like S5 asks),
  large calls one block of the output per core (each output the same dot product).
  ``numpy.convolve`` skips the padded zeros at the edges of its ``"full"`` output and multiplies
  the zeros a dilation inserts between the taps; S9's canonical form does the opposite (a NaN
  or Inf tap meets a padded zero: NaN; the inserted zeros are not taps). So a non-finite kernel
  pads explicitly and runs ``"valid"``, and non-finite data with dilation run the shared
  shift-and-add over the taps (this deviates from SciPy's 1-D direct path, which skips them).
  Where Numba is installed, float32/float64 calls with stride 1, no dilation and finite taps
  run its fused loop instead (pieces of the output on all cores) from a few taps and where
  ``numpy.convolve`` would take 50 us or more;
* 2-D direct on float32/float64 (also batched): a fused loop compiled by Numba, in bands of
  rows on all cores (:mod:`convkit.backends.numba_engine`), or OpenCV's fused ``cv2.filter2D``
  (:mod:`convkit.backends.opencv_engine`), where they are installed and compute the same
  products: Numba where its loop applies (stride 1, no dilation) and is faster than OpenCV's
  on one core (float64 images; float32 ones with kernels up to 7x7 from mid-size images, wider
  ones only where OpenCV runs on every core too), else
  OpenCV (on convkit's threads for images below a megapixel: groups of images or bands of rows);
* 3-D direct on float32/float64 (also batched): Numba's 3-D loop (kernel planes, rows and
  taps summed in registers one kernel row per pass, planes of the output on all cores) where
  it applies (stride 1, no dilation, finite taps) and the call is not a few microseconds;
* N-d direct on float32/float64: ``scipy.ndimage.correlate`` (accumulates in float64), split
  into row blocks run on all cores (ndimage releases the GIL). It drops weights with
  ``|w| <= DBL_EPSILON`` (and so would not propagate a NaN through a zero tap), so it is used
  only when every tap is finite and larger than that;
* separable kernels under ``method="auto"``: one ``scipy.ndimage.correlate1d`` pass per axis
  when the kernel is rank 1 to rounding and the data are finite (the shared
  :func:`convkit.backends._base.separable_factors` and ``ArrayBackend.separable_passes``);
  OpenCV's ``sepFilter2D`` for two float axes where it is installed, and Numba's separable
  loop from mid-size images, float32 and float64, where it is faster (no data pass: its test
  of each output row finds NaN/Inf data, S9);
* FFT: ``scipy.fft`` (real transforms, fast lengths, all cores, product formed in place);
  overlap-add along one axis: batched block transforms (:mod:`convkit.backends.overlap_add`),
  long inputs in slabs of a size fixed by the kernel run on all cores (the same bits on any
  number of cores, docs/determinism.md); along several axes ``scipy.signal.oaconvolve`` with
  ``scipy.fft`` set to use all cores (pocketfft gives the same bits for any number of
  workers). A kernel holding NaN/Inf runs the
  plain FFT instead (overlap-add splits a large kernel into blocks, which would leave outputs
  finite that S9 makes non-finite: FFT behaviour is every output non-finite).

How ``auto`` chooses among them is documented in :mod:`convkit.choose`.
"""

from __future__ import annotations

import cmath
import dataclasses
import functools
import math
import os
import threading
import time
from typing import NamedTuple

import numpy as np

from convkit.choose import Capabilities, dft_tiles, fused_3d_cost, fused_fft_applies, phases_cost, tiled_dft
from convkit.plan import Plan

from . import numba_engine, opencv_engine, polyphase, torch_engine
from ._base import (
    ArrayBackend,
    cannot_overflow,
    cpu_threads,
    pads_in_reach,
    separable_factors,
    separable_gain,
    separable_pays,
)
from .overlap_add import overlap_add_full

__all__ = ["NumpyBackend", "backend", "separable_factors"]

_OA_THREAD_MIN_SIZE = 500_000
#: smallest block of a long 1-D overlap-add (outputs); see _oa_block
_OA_BLOCK = 1 << 17
_OA_THREAD_MIN_TAPS = 64
#: blocks per core of the paths cut per core (numpy.convolve and ndimage blocks): a core that
#: is late to start (a busy machine) leaves its blocks to the others (see _map)
_BLOCKS_PER_THREAD = 2
#: OpenCV tiled-DFT tiles the cost model counts at a time: fixed (not the core count), so that
#: method='auto' picks the same method, and the same bits, on any number of cores (S8)
DFT_THREADS = 2


_POOL = None
_POOL_PID = None


def _pool():
    """The backend's thread pool (one per process: a forked child's copy has no threads)."""
    global _POOL, _POOL_PID
    if _POOL is None or _POOL_PID != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(cpu_threads(), thread_name_prefix="convkit")
        _POOL_PID = os.getpid()
    return _POOL


#: a call whose helper threads were late (see :func:`_map`) makes the next calls run on the calling
#: thread alone for this many seconds: another process holds the other cores
BUSY_HOLD = 1.0
#: how late is late: the caller waited for helpers longer than this and than its own share of the
#: work took, or worked alone this long (no helper having started)
_LATE = 2e-4
_busy_until = 0.0


def _busy() -> bool:
    """Whether a late helper (:func:`_map`) marked the machine busy less than ``BUSY_HOLD`` ago."""
    return bool(_busy_until) and time.monotonic() < _busy_until


def _cores_now(cores: int) -> int:
    """``cores``, or one while the machine is busy (:func:`_map`): a job list cut for several
    cores would run on the calling thread alone, and where cutting has a cost of its own
    (OpenCV's bands filter the rows around each cut twice) one piece is cheaper."""
    return 1 if cores > 1 and _busy() else cores


def _map(func, jobs) -> None:
    """Run ``func(*job)`` for every job: the calling thread and pool threads claim them one by one.

    The caller takes the first job (one thread fewer to wake: waking an idle core costs a VM
    tens to hundreds of microseconds) and keeps claiming; helpers claim what is left. On a
    busy machine a helper may not be scheduled for milliseconds: the caller then runs the jobs
    it has not claimed and waits only for jobs a helper has started, so a call is never slower
    than on one core by more than one job. Every job runs even when one fails; the first error
    is raised once every claimed job has ended. Jobs never wait on other jobs, so concurrent
    callers cannot deadlock.

    A helper that started late or was descheduled in the middle of a job means that another
    process holds the cores: the caller waited for it longer than ``_LATE`` and than its own
    work took, and the helper spent more than ``_LATE`` off its core (before it started, or
    since: its wall time less its CPU time), or the caller worked alone that long (no helper
    having started). Calls for the next :data:`BUSY_HOLD` seconds then run
    every job on the calling thread, which is what the other process leaves them. A helper
    that ran the whole time but slowly (the page faults of a fresh output, on a first call)
    does not count. No result depends on it (S8).
    """
    global _busy_until
    jobs = list(jobs)
    if len(jobs) <= 1 or _busy():
        for j in jobs:
            func(*j)
        return
    cond = threading.Condition()
    state = {"next": 0, "running": 0, "helped": 0, "off_cpu": 0.0}
    errors: list[BaseException] = []

    def claim(helper: bool = False, late: float = 0.0) -> int | None:
        with cond:
            i = state["next"]
            if i >= len(jobs):
                return None
            state["next"] = i + 1
            state["running"] += 1
            state["helped"] += helper
            state["off_cpu"] = max(state["off_cpu"], late)
            return i

    def run(i: int | None, clock: tuple[float, float] | None = None) -> None:
        """The jobs from ``i`` on; ``clock``: a helper's wall and CPU clocks at its start, whose
        gap (time spent off its core) it records after each job."""
        while i is not None:
            try:
                func(*jobs[i])
            except BaseException as exc:  # raised by the caller once the claimed jobs ended
                errors.append(exc)
            finally:
                off = 0.0
                if clock is not None:
                    off = (time.perf_counter() - clock[0]) - (time.thread_time() - clock[1])
                with cond:
                    state["off_cpu"] = max(state["off_cpu"], off)
                    state["running"] -= 1
                    cond.notify_all()
            i = claim(clock is not None)

    def helper(asked: float) -> None:
        clock = (time.perf_counter(), time.thread_time())
        run(claim(True, clock[0] - asked), clock)  # late: how long it took to start

    first = claim()
    pool = _pool()
    start = time.perf_counter()
    for _ in range(min(cpu_threads(), len(jobs)) - 1):
        pool.submit(lambda: helper(start))  # a helper claims when it runs, not when submitted
    run(first)
    alone = time.perf_counter()
    with cond:
        cond.wait_for(lambda: state["running"] == 0)
        helped, off_cpu = state["helped"], state["off_cpu"]
    waited, worked = time.perf_counter() - alone, alone - start
    if (waited > max(_LATE, worked) and off_cpu > _LATE) or (not helped and worked > _LATE):
        _busy_until = time.monotonic() + BUSY_HOLD
    if errors:
        raise errors[0]


def _finite_kernel(w: np.ndarray) -> bool:
    """Whether the 1-D kernel ``w`` (a 2-D one raveled) surely holds no NaN/Inf (small-call
    overhead: ~1 us, against 5-8 us for :meth:`NumpyBackend.all_finite` on a 3x3 kernel).

    ``sum |w|^2`` by ``numpy.correlate`` (a dot product: no floating-point warnings, unlike a
    ufunc), or for a few taps ``sum(w)`` in Python, is not finite when a tap is NaN/Inf; taps
    whose squares (or sum) overflow also read as not finite, which only sends the call to the
    other exact path."""
    if w.dtype.kind in "biu":
        return True
    if w.dtype.char in "fdFD":
        if w.shape[0] <= _FEW_TAPS:  # a Python sum: NaN, Inf or an overflow make it not finite
            return cmath.isfinite(sum(w.tolist()))
        return cmath.isfinite(np.correlate(w, w)[0])
    return bool(np.isfinite(w).all())


#: kernels up to this many taps are tested finite by :func:`_finite_kernel` in Python (0.16 us
#: for 3 taps, against 0.7 us for ``numpy.correlate``)
_FEW_TAPS = 32
#: seconds per squared footprint position that ``scipy.ndimage.correlate`` spends on a kernel's
#: footprint before it filters, whatever the image's size (a 3x3 kernel with dilation 16, 33x33:
#: 6 ms; 65x65: 70 ms; 129x129: 1 s; measured on 256x256 to 2000x2000 images, docs/backends/numpy.md)
_NDIMAGE_SETUP = 4e-9


def _quiet(func):
    """``func`` under ``numpy.errstate(all="ignore")`` (S13): worker threads do not inherit the
    caller's error state (a context variable)."""

    def run(*args, **kwargs):
        with np.errstate(all="ignore"):
            return func(*args, **kwargs)

    return run


def _blocks(n: int, parts: int) -> list[tuple[int, int]]:
    """``[0, n)`` cut into ``parts`` nearly equal blocks. Only for paths whose every output is
    computed the same way whatever the cut (``numpy.convolve`` dot products, ndimage rows):
    a cut by the number of cores must never change a result (S8, docs/determinism.md)."""
    step = -(-n // parts)
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    """``[0, n)`` cut into blocks of ``size`` (the last one shorter): a cut that depends on the
    shapes only, for paths whose results depend on where the cut falls (overlap-add)."""
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _oa_block(m: int) -> int:
    """Outputs per block of a long 1-D overlap-add (kernel length ``m``): a power of two of at
    least ``_OA_BLOCK`` and ``128 * m`` (the halo of ``m - 1`` samples stays small). It depends
    on the kernel alone, never on the number of cores, so the result is the same on every
    machine (S8). Blocks of this size are also faster than one ``oaconvolve`` call on a single
    core (cache-sized temporaries; 1e6 x 256 float64 on a 2-core x86-64: 14 ms against 17 ms)."""
    return max(_OA_BLOCK, 1 << (128 * m - 1).bit_length())


def _full_in_blocks(x: np.ndarray, w: np.ndarray, axis: int, lo: int, hi: int, full,
                    block: int | None = None) -> np.ndarray:
    """``full(x)[..., lo:hi]`` along ``axis`` in blocks of the output run on all cores.

    ``block``: outputs per block, a size fixed by the shapes (overlap-add, whose results depend
    on where the blocks start); ``None``: two blocks per core, only for a ``full`` whose every
    output is the same computation wherever the cut falls (``numpy.convolve``, below).

    ``full(seg)`` is the full linear convolution of ``seg`` with ``w`` along ``axis``
    (``numpy.convolve`` and ``oaconvolve`` release the GIL). Output ``j`` reads
    ``x[j - m + 1 .. j]``, so block ``[a, b)`` is ``full`` of ``x[a - m + 1 : b]``, shifted: no
    padded copy of ``x``. A segment is never shorter than the kernel unless ``x`` is
    (``numpy.convolve`` would swap the operands and sum in another order), so each output is
    the very dot product one call computes.
    """
    m, n = w.shape[axis], x.shape[axis]
    shape = [max(a, b) for a, b in zip(x.shape, w.shape)]  # broadcast: equal sizes or 1
    shape[axis] = hi - lo
    out = np.empty(shape, dtype=np.result_type(x.dtype, w.dtype))
    pre = (slice(None),) * axis

    def job(a: int, b: int) -> None:
        s0 = max(a - m + 1, 0)
        s1 = min(max(b, s0 + m), n)
        s0 = max(min(s0, s1 - m), 0)  # at the right end: widen to the left instead
        seg = full(x[pre + (slice(s0, s1),)])
        out[pre + (slice(a - lo, b - lo),)] = seg[pre + (slice(a - s0, b - s0),)]

    cut = _blocks(hi - lo, _BLOCKS_PER_THREAD * cpu_threads()) if block is None else _spans(hi - lo, block)
    _map(job, [(lo + a, lo + b) for a, b in cut])
    return out


#: numpy.convolve's dot products go through BLAS for float types; OpenBLAS splits a dot product
#: longer than 10,000 over its threads (its sum then depends on the thread count), so longer
#: kernels are convolved in pieces of at most this many taps, added in a fixed order
_BLAS_DOT_TAPS = 8192


def _convolve_full(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``numpy.convolve(a, v, "full")`` whose sums do not depend on the number of BLAS threads:
    the shorter operand (the dot-product length) is cut into pieces of ``_BLAS_DOT_TAPS``."""
    if min(a.shape[0], v.shape[0]) <= _BLAS_DOT_TAPS or a.dtype.kind not in "fc":
        return np.convolve(a, v, "full")
    if a.shape[0] < v.shape[0]:
        a, v = v, a
    out = np.zeros(a.shape[0] + v.shape[0] - 1, dtype=np.result_type(a, v))
    for c0 in range(0, v.shape[0], _BLAS_DOT_TAPS):
        part = np.convolve(a, v[c0:c0 + _BLAS_DOT_TAPS], "full")
        out[c0:c0 + part.shape[0]] += part
    return out


@functools.lru_cache(maxsize=512)
def _flip_index(plan: Plan) -> tuple:
    """The index that reverses the plan's convolution axes (``numpy.flip`` without its overhead)."""
    return tuple(slice(None, None, -1) if a in plan.axes else slice(None) for a in range(plan.ndim))


class _Route(NamedTuple):
    """How a 2-D (or 3-D: Numba's loop only) direct plan runs on the fused engines (shapes
    only; :func:`_route`)."""

    #: Numba's direct loop: -1 where it does not apply (or is not wanted), 0 where OpenCV's
    #: filter is as fast, else its cores
    numba: int
    #: the same for Numba's separable loop against ``sepFilter2D`` after auto's data pass
    numba_separable: int
    #: whether OpenCV's direct filter applies and imports
    opencv: bool
    #: cores for OpenCV's direct filter and for ``sepFilter2D`` (convkit's threads, 1: OpenCV alone)
    opencv_cores: int
    opencv_separable_cores: int
    #: whether ``auto``'s separable test pays for this plan
    separable_pays: bool = False


def _route(plan: Plan, caps: Capabilities, numba: bool, always: bool) -> _Route:
    """How a 2-D plan may run on the fused engines (before the kernel's values are known); a
    3-D plan gets Numba's 3-D loop or none (:func:`_volume_cores`).

    The cost model's fused costs (OpenCV's filters) put a time on one image and on the whole
    call: the loops run from :data:`numba_engine.PREFERRED_FROM` (direct) and
    :data:`numba_engine.SEPARABLE_FROM` (separable) per image, by dtype, on every core from
    :data:`numba_engine.THREADED_FROM` for the call. ``always``: wherever they apply, on every
    core (the test suite's ``numpy-numba`` runner); without OpenCV the separable loop runs
    wherever it applies. OpenCV's filters run on convkit's threads from
    :data:`opencv_engine.THREADED_FROM` for the call, on images smaller than
    :data:`opencv_engine.OWN_THREADS_FROM` (larger ones it threads itself)."""
    if len(plan.axes) == 3:
        return _Route(_volume_cores(plan, caps, numba, always), -1, False, 1, 1)
    opencv = opencv_engine.applies(plan) and math.prod(plan.x_shape) > 0 and opencv_engine.available()[0]
    scale = caps.single_fused if plan.acc_dtype == np.float32 else 1.0
    taps = math.prod(plan.k_shape[a] for a in plan.axes)
    sep_taps = sum(plan.k_shape[a] for a in plan.axes)
    per_output = scale * (caps.c_fused * taps + caps.c_fused_out)
    per_output_sep = scale * (caps.c_fused_sep * sep_taps + caps.c_fused_out)
    cores = (_opencv_cores(plan, per_output), _opencv_cores(plan, per_output_sep))
    if not (numba and numba_engine.applies(plan) and numba_engine.available()[0]):
        return _Route(-1, -1, opencv, *cores)
    if always:
        return _Route(cpu_threads(), cpu_threads(), opencv, *cores)
    # beyond OpenCV's direct filter (its DFT would spread a NaN) the loop runs whatever the size
    beyond = not opencv and opencv_engine.applies(plan, "dft")
    preferred = _ANY if beyond else numba_engine.preferred_from(plan)
    direct = _loop_cores(plan, per_output, preferred)
    if not opencv_engine.available()[0]:
        return _Route(direct, max(direct, 1), opencv, *cores)
    return _Route(direct, _loop_cores(plan, per_output_sep, numba_engine.SEPARABLE_FROM), opencv, *cores)


def _volume_cores(plan: Plan, caps: Capabilities, numba: bool, always: bool) -> int:
    """Cores for Numba's 3-D loop (:func:`numba_engine.correlate_3d`), or -1 where it does not
    apply or its estimated time (``caps.c_fused_3d``) is below :data:`numba_engine.TIME_3D_FROM`
    (``scipy.ndimage`` runs those); every core from :data:`numba_engine.THREADED_FROM`.
    ``always``: wherever it applies, on every core."""
    if not (numba and numba_engine.applies_3d(plan) and numba_engine.available()[0]):
        return -1
    if always:
        return cpu_threads()
    seconds = fused_3d_cost(out_shape=plan.out_shape, x_shape=plan.x_shape, k_shape=plan.k_shape,
                            axes=plan.axes, dilation=plan.dilation, stride=plan.stride, caps=caps,
                            dtype=plan.acc_dtype)
    if not math.isfinite(seconds) or seconds < numba_engine.TIME_3D_FROM:  # inf: no c_fused_3d
        return -1
    # the estimate is on every core: on one, about twice as long
    return cpu_threads() if 2 * seconds >= numba_engine.THREADED_FROM else 1


_ANY = {"f": 0.0, "d": 0.0}

#: the estimated seconds (``Capabilities.fused_loop_from``) from which auto runs kernels with more
#: taps than OpenCV's direct filter takes on Numba's loop: 2000x2000 and 1000x1000 images with
#: 11x11 and 15x15 kernels run 1.3-1.9x faster than on OpenCV's tiled DFT or SciPy's FFT, while
#: on 500x500 and smaller the FFT is as fast or faster (docs/backends/numpy.md; 3 ms with the
#: filter's costs, halved with the loop's own, NUMBA_BEYOND_FILTER_COSTS, to keep those shapes)
LOOP_BEYOND_FILTER_FROM = 1.5e-3
#: Numba's 2-D loop on kernels beyond OpenCV's direct filter, on every core (2000x2000 'same',
#: float64 9x9 to 15x15: 7.6-15.6 ms, float32 13x13 to 17x17: 6.6-10.5 ms, Zen 5, 2026-12-05;
#: the filter's costs put it 2.2x too high, above OpenCV's DFT in tiles where it is faster)
NUMBA_BEYOND_FILTER_COSTS = dict(c_fused_loop=0.014e-9, c_fused_loop_out=0.8e-9)
#: Numba's separable loop, which runs the separable calls from numba_engine.SEPARABLE_FROM (the
#: filter's estimate per image; below, sepFilter2D), on every core (2000x2000 with 15+15 and 31+31
#: taps, 1000x1000 with 9+9, 700x600 with 25+25: 0.036e-9 s per multiply-add in float64, 0.02e-9
#: in float32, Zen 5, 2026-12-05; OpenCV's sepFilter2D costs put it 3-4x too high)
NUMBA_SEPARABLE_COSTS = dict(c_fused_sep_loop=0.036e-9, c_fused_sep_loop_out=0.1e-9,
                             fused_sep_loop_from=(numba_engine.SEPARABLE_FROM["f"],
                                                  numba_engine.SEPARABLE_FROM["d"]))


def _loop_cores(plan: Plan, per_output: float, preferred_from: dict) -> int:
    """Cores for a Numba loop whose OpenCV counterpart takes ``per_output`` seconds an output:
    0 below ``preferred_from`` (by dtype) per image, else every core from
    :data:`numba_engine.THREADED_FROM` for the whole call, else one."""
    if per_output * math.prod(plan.out_shape[a] for a in plan.axes) < preferred_from[plan.acc_dtype.char]:
        return 0
    return cpu_threads() if per_output * math.prod(plan.out_shape) >= numba_engine.THREADED_FROM else 1


def _opencv_cores(plan: Plan, per_output: float) -> int:
    """Cores for an OpenCV filter that takes ``per_output`` seconds an output on one core:
    every core from :data:`opencv_engine.THREADED_FROM` for the whole call (groups of images;
    :data:`opencv_engine.BANDS_FROM` where there are fewer images than cores: bands of rows) on
    images below :data:`opencv_engine.OWN_THREADS_FROM` pixels, else one (OpenCV's own threads,
    if any)."""
    pixels = math.prod(plan.x_shape[a] for a in plan.axes)
    if pixels >= opencv_engine.OWN_THREADS_FROM:
        return 1
    cores = cpu_threads()
    # fewer images than cores: bands of rows, which filter the rows around each cut twice
    grouped = math.prod(plan.x_shape) >= cores * pixels
    start = opencv_engine.THREADED_FROM if grouped else opencv_engine.BANDS_FROM
    return cores if per_output * math.prod(plan.out_shape) >= start else 1


#: OpenBLAS runs a dot product longer than this on all its threads, which then spin for a while
#: after it and take a core from the next threaded step (OpenCV's filters: 25% slower)
_BLAS_THREADED_DOT = 10_000


#: the ``method`` that :meth:`NumpyBackend.transform` hands ``fft_corr`` for a float FFT that
#: OpenCV's DFT may run (``linear_conv`` checks the sizes it computes)
_OPENCV_FFT = "fft[opencv]"


def _dft_fits(x, wf, period, most: int) -> bool:
    """Whether :func:`opencv_engine.dft_linear_conv` computes this transform: two real 2-D arrays
    of one float dtype, a period (per axis, in the arrays' order) of at most ``most`` points and
    more than one column, that neither array is longer than."""
    fits = _period_fits(x.shape, wf.shape, period, most)
    return fits and wf.ndim == 2 and x.dtype == wf.dtype and x.dtype.char in "fd"


def _period_fits(x_shape, k_shape, period, most: int) -> bool:
    """:func:`_dft_fits`'s shape part: at most ``most`` points, more than one column, and
    neither operand longer than the period."""
    # OpenCV refuses a one-column period (its nonzeroRows logic): such calls keep scipy.fft
    return math.prod(period) <= most and period[1] > 1 and all(
        max(n, m) <= s for n, m, s in zip(x_shape, k_shape, period))


_UNKNOWN = object()

#: entries of a backend's per-plan cache (:meth:`NumpyBackend._routes`, :meth:`NumpyBackend._per_plan`)
#: before it starts again: a plan keeps up to six facts there
_PLAN_FACTS = 4096


def _fft_gain(plan: Plan) -> float:
    """``P * sqrt(P)`` for the ``P`` points of ``plan``'s transforms (all of its images): how
    much an FFT can grow the data's magnitude, per unit of ``sum |w|`` (:func:`cannot_overflow`)."""
    points = math.prod(plan.x_shape[a] + max(lo, 0) + max(hi, 0) for a, (lo, hi) in zip(plan.axes, plan.pads))
    points *= math.prod(plan.out_shape) // max(math.prod(plan.out_shape[a] for a in plan.axes), 1)
    return points * math.sqrt(points)


def _opencv_separable(plan: Plan) -> bool:
    return opencv_engine.applies(plan, "separable") and opencv_engine.available()[0]


def _every_tap_nonzero(factors, dilation) -> bool:
    """Whether the separable passes multiply every datum of a window by a non-zero tap: no
    factor holds a zero, and no dilation inserts zeros between the taps."""
    return all(d == 1 for d in dilation) and all(np.count_nonzero(f) == f.size for f in factors)


def _sum_squares(a: np.ndarray) -> float:
    """``sum |a|^2`` of a contiguous float array in one pass, without a temporary (not finite
    when a value is NaN/Inf, or when the squares overflow): a BLAS dot product for short
    arrays, ``numpy.einsum`` (single-threaded SIMD) for long ones."""
    flat = a.reshape(-1)
    with np.errstate(all="ignore"):
        if flat.size <= _BLAS_THREADED_DOT:
            return float(np.vdot(flat, flat).real)
        if flat.dtype.kind == "c":
            flat = flat.view(flat.real.dtype)  # sum |z|^2 = sum re^2 + im^2
        return float(np.einsum("i,i->", flat, flat))


class NumpyBackend(ArrayBackend):
    """Runs convkit on NumPy arrays with NumPy and SciPy."""

    name = "numpy"
    install_hint = "numpy and scipy are core dependencies of convkit"
    xp = np
    # measured on a 2-core x86-64 (numpy 2.4, scipy 1.17); `convkit.tune` re-measures them
    capabilities = Capabilities(methods=("direct", "fft", "oa"), c_direct=0.4e-9, c_fft=0.2e-9,
                                c_direct_1d=0.08e-9, c_out=2.0e-9, c_sep=0.2e-9, fft_call=5.0e-5,
                                fft_nd_call=7e-5, oa_call=1.5e-4, single_fft=0.55, single_direct_1d=0.6,
                                c_out_1d_single=12e-9, oa_1d_out=1.5e-9, oa_1d_call=1.5e-5,
                                direct_1d_gaps=True, phases_1d_from=8, phases_call=5e-5, phases_1d_row=32,
                                phases_nd_call=1e-4)
    # phases_1d_from: a 1-D signal's phases are the columns of a (blocks, d) image, whose rows the
    # engines sum a vector at a time (at d=2, 1e6 samples and 65 taps: 50 ms against 7.5 ms for
    # numpy.convolve with the dilated kernel); phases_1d_row: 1e6 samples, 9 and 33 taps, each
    # output cost 3-5x the engine's estimate at d=8, 1.5-2.5x at d=16, about 1x from d=32 on;
    # phases_call: the sub-plan, a second call's checks; phases_nd_call: padding, splitting and
    # merging images of 32x32 to 128x128 took 75-90 us beside the engine's call

    #: OpenCV's filter2D measured on the same machine (2000x2000 'same', 3x3 to 11x11), and its DFT
    #: in tiles (:func:`opencv_engine.tiled_correlate`: 1000x1000 and 2000x2000 with 15x15 kernels,
    #: 2026-12-05; fused_dft_tile: the Python steps of a tile, from 128x128 to 1024x1024 images)
    opencv_costs = dict(c_fused=0.034e-9, c_fused_out=0.9e-9, single_fused=0.55, c_fused_sep=0.12e-9,
                        c_fused_dft=4.1e-9, fused_dft_call=5e-5, fused_fft_points=9_000_000,
                        fused_dft_lengths=opencv_engine.TILE_LENGTHS, fused_dft_tile=2.5e-5,
                        fused_taps=(opencv_engine.MAX_TAPS[np.dtype(np.float32)],
                                    opencv_engine.MAX_TAPS[np.dtype(np.float64)]))

    #: Numba's 1-D loop on the same kind of machine (1e5 samples, 16-256 taps, every core); from 2
    #: taps (float32) and 4 (float64) it is faster than ``numpy.convolve``
    numba_1d_costs = dict(c_fused_1d=5.5e-11, c_fused_1d_out=0.9e-9, single_fused_1d=0.5,
                          fused_1d_taps=(2, 4))

    #: Numba's 3-D loop on the same machine (64x64x64 volumes, 3x3x3 and 5x5x5 kernels, every core)
    numba_3d_costs = dict(c_fused_3d=4.0e-11, c_fused_3d_out=1.0e-9, single_fused_3d=0.6)

    #: set by ``__init__``; a subclass that does not call it computes with SciPy and NumPy only
    numba_always = False
    # the per-plan facts (:meth:`_per_plan`), made afresh for new capabilities or engines: a
    # subclass that does not call ``__init__`` gets its own on its first call
    _route_cache: dict = {}
    _route_caps = None
    _engines = False
    _numba = False

    @property
    def engines(self) -> bool:
        """Whether the host engines (OpenCV, Numba, torch) may run; setting it (``convkit tune``
        times SciPy alone) makes the per-plan facts be worked out again."""
        return self._engines

    @engines.setter
    def engines(self, on: bool) -> None:
        self._engines, self._route_caps = on, None

    @property
    def numba(self) -> bool:
        """Whether Numba's loops may run; setting it makes the per-plan facts be worked out again."""
        return self._numba

    @numba.setter
    def numba(self, on: bool) -> None:
        self._numba, self._route_caps = on, None

    def __init__(self, *, engines: bool = True, numba: bool = True, numba_always: bool = False) -> None:
        """``engines=False``: SciPy and NumPy only, even where OpenCV, Numba or torch is
        installed; ``numba=False``: the other engines but not Numba's loop; ``numba_always``:
        Numba's loop wherever it applies, on every core, even where OpenCV's filter is as
        fast (the test suite's ``numpy-numba`` runner)."""
        self.numba = engines and numba and numba_engine.installed()
        self.numba_always = numba_always
        self._route_cache: dict = {}
        self._route_caps = None
        self.engines = engines and (opencv_engine.installed() or torch_engine.installed() or self.numba)
        opencv = engines and opencv_engine.installed()
        if opencv:
            # OpenCV's tiled DFT transforms as many tiles at once as it has threads, but auto's pick
            # must not depend on the cores (S8: the same bits on one core as on all), so it is
            # priced on the two threads of the machine its constants were fit on, as the others are
            self.capabilities = dataclasses.replace(type(self).capabilities, fused_engine=opencv_engine.NAME,
                                                    fused_dft_threads=DFT_THREADS, **self.opencv_costs)
        elif self.numba:  # the loop's direct costs only (OpenCV's filters and DFT are not there): no
            # filter (fused_taps 0), every 2-D direct call with stride 1 and no dilation on the loop
            costs = {k: self.opencv_costs[k] for k in ("c_fused", "c_fused_out", "single_fused")}
            self.capabilities = dataclasses.replace(type(self).capabilities, fused_engine=numba_engine.NAME,
                                                    fused_taps=(0, 0), **costs)
        if self.numba:  # Numba's loop also runs the kernels beyond OpenCV's direct filter, at its
            # own costs, from LOOP_BEYOND_FILTER_FROM (docs/backends/numpy.md)
            loop_from = LOOP_BEYOND_FILTER_FROM if opencv else 0.0
            self.capabilities = dataclasses.replace(self.capabilities, **self.numba_1d_costs,
                                                    **self.numba_3d_costs, fused_loop_taps=(1 << 30, 1 << 30),
                                                    fused_loop_from=loop_from, **NUMBA_BEYOND_FILTER_COSTS,
                                                    **NUMBA_SEPARABLE_COSTS)

    def host_engines(self) -> dict[str, str]:
        """The compiled host engines this backend uses besides NumPy and SciPy: name -> version
        and what it runs (``convkit info`` lists them). Asking imports them."""
        found = {}
        if self.numba and numba_engine.available()[0]:
            width = ", AVX-512" if numba_engine.wide_vectors() else ""
            found[numba_engine.NAME] = (f"{numba_engine.version()} (1-D, 2-D and 3-D float32/float64 direct "
                                        f"and separable kernels with stride 1 and no dilation, on every "
                                        f"core{width})")
        if self.engines and opencv_engine.available()[0]:
            found[opencv_engine.NAME] = (f"{opencv_engine.version()} (2-D float32/float64 direct, separable "
                                         "kernels, tiled DFT, whole-image DFT for small FFTs)")
        if self.engines and torch_engine.available()[0]:
            import torch

            found[torch_engine.NAME] = f"{torch.__version__} (convkit.conv: float32/float64 layers)"
        return found

    def conv_layer(self, plan, x, w, bias):
        """:func:`convkit.conv`: torch's CPU convolution for float32/float64 direct layers where
        torch is installed (:mod:`convkit.backends.torch_engine`), else convkit's own."""
        if self.engines and torch_engine.applies(plan) and torch_engine.available()[0]:
            return torch_engine.conv_layer(plan, x, w, bias)
        return super().conv_layer(plan, x, w, bias)

    def measure_engines(self, size: int, best) -> dict:
        """OpenCV's cost constants timed here on ``size``-square images (``convkit tune``;
        ``best(fn)`` is its timer): its direct loop with 3x3 and 7x7 kernels (float64, and
        float32 for ``single_fused``), its separable filter with 15+15 taps and its DFT in tiles
        with a 15x15 kernel; Numba's 2-D loops beside it (:meth:`_measure_numba_2d`)."""
        from convkit.plan import plan_call

        opencv = self.engines and opencv_engine.available()[0]
        if not (opencv or (self.numba and numba_engine.available()[0])):
            return {}
        loop_1d = self._measure_numba_1d(size * size, best) if self.numba else {}
        loop_1d.update(self._measure_numba_3d(best) if self.numba else {})
        rng = np.random.default_rng(1)
        x = rng.standard_normal((size, size))
        if self.numba and opencv:
            loop_1d.update(self._measure_numba_2d(x, best))

        def filter_time(img, k, how="direct") -> float:
            plan = plan_call("correlate", img, k, self.capabilities, mode="same", method="direct")
            if how == "separable":
                g = np.ascontiguousarray(k[:, 0] / k[0, 0])  # outer(g, k[0]) is k
                return best(lambda: opencv_engine.correlate_separable(plan, img, [g, k[0]], self.pad))
            if not opencv:  # Numba's loop alone: its direct costs, on every core
                return best(lambda: numba_engine.correlate(plan, img, k, self.pad, _map, cpu_threads()))
            return best(lambda: opencv_engine.correlate(plan, img, k, self.pad))

        n = x.size
        t3 = filter_time(x, rng.standard_normal((3, 3)) + 4)
        t7 = filter_time(x, rng.standard_normal((7, 7)) + 4)
        c_fused = max((t7 - t3) / (40 * n), 1e-13)
        c_fused_out = max((t3 - 9 * c_fused * n) / n, 1e-12)
        x32 = x.astype(np.float32)
        t7_32 = filter_time(x32, (rng.standard_normal((7, 7)) + 4).astype(np.float32))
        single_fused = min(max(t7_32 / t7, 0.1), 1.0)
        if not opencv:
            return dict(c_fused=c_fused, c_fused_out=c_fused_out, single_fused=single_fused, **loop_1d)
        g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 15) ** 2)
        t_sep = filter_time(x, np.outer(g, g), "separable")
        c_fused_sep = max((t_sep - c_fused_out * n) / (30 * n), 1e-13)
        c_fused_dft = self._measure_tiled_dft(x, rng.standard_normal((15, 15)) + 4, best)
        return dict(c_fused=c_fused, c_fused_out=c_fused_out, single_fused=single_fused,
                    c_fused_sep=c_fused_sep, c_fused_dft=c_fused_dft, **loop_1d)

    def _measure_numba_2d(self, x, best) -> dict:
        """Numba's 2-D loops on ``x`` (float64, every core) where they run beside OpenCV: the
        direct loop with 9x9 and 15x15 kernels (``c_fused_loop``, ``c_fused_loop_out``) and the
        separable one with 15+15 taps (``c_fused_sep_loop``, less ``c_fused_sep_loop_out``)."""
        from convkit.plan import plan_call

        if not numba_engine.available()[0]:
            return {}
        rng = np.random.default_rng(3)
        n, caps = x.size, self.capabilities

        def loop_time(m: int) -> float:
            k = rng.standard_normal((m, m)) + 4
            plan = plan_call("correlate", x, k, caps, mode="same", method="direct")
            return best(lambda: numba_engine.correlate(plan, x, k, self.pad, _map, cpu_threads()))

        t9, t15 = loop_time(9), loop_time(15)
        c_loop = max((t15 - t9) / (144 * n), 1e-13)
        g = np.exp(-0.5 * np.linspace(-2.5, 2.5, 15) ** 2)
        plan = plan_call("correlate", x, np.outer(g, g), caps, mode="same", method="direct")
        t_sep = best(lambda: numba_engine.correlate_separable(plan, x, [g, g], self.pad, _map, cpu_threads()))
        return dict(c_fused_loop=c_loop, c_fused_loop_out=max((t9 - 81 * c_loop * n) / n, 1e-12),
                    c_fused_sep_loop=max((t_sep - caps.c_fused_sep_loop_out * n) / (30 * n), 1e-13))

    def _measure_tiled_dft(self, x, k, best) -> float:
        """``c_fused_dft``: OpenCV's DFT in the tiles the cost model picks for ``x`` and ``k``
        ('same'), less the estimate's other terms, per transform point of its work
        (:func:`convkit.choose.tiled_dft`)."""
        from convkit.plan import plan_call

        caps = self.capabilities
        plan = plan_call("correlate", x, k, caps, mode="same", method="oa")
        tiled = tiled_dft(x.shape, k.shape, caps)
        threads = cpu_threads() if tiled.threaded else 1
        t = best(lambda: opencv_engine.tiled_correlate(plan, x, k, self.pad, tiled.lengths, _map, threads))
        return max((t - caps.fused_dft_call - tiled.fixed) / tiled.work, 1e-13)

    def _measure_numba_1d(self, n: int, best) -> dict:
        """Numba's 1-D loop on ``n`` samples with 16 and 128 taps on every core (float64, and
        float32 for ``single_fused_1d``): ``c_fused_1d``, ``c_fused_1d_out``."""
        from convkit.plan import plan_call

        if not numba_engine.available()[0]:
            return {}
        rng = np.random.default_rng(2)

        def loop_time(x, k) -> float:
            plan = plan_call("correlate", x, k, self.capabilities, mode="same", method="direct")
            return best(lambda: numba_engine.correlate_1d(plan, x, k, self.pad, _map, cpu_threads()))

        x = rng.standard_normal(n)
        t16, t128 = loop_time(x, rng.standard_normal(16)), loop_time(x, rng.standard_normal(128))
        c_tap = max((t128 - t16) / (112 * n), 1e-13)
        t128_32 = loop_time(x.astype(np.float32), rng.standard_normal(128).astype(np.float32))
        return dict(c_fused_1d=c_tap, c_fused_1d_out=max((t16 - 16 * c_tap * n) / n, 1e-12),
                    single_fused_1d=min(max(t128_32 / t128, 0.1), 1.0))

    def _measure_numba_3d(self, best) -> dict:
        """Numba's 3-D loop on a 48x48x48 volume with 3x3x3 and 5x5x5 kernels on every core
        (float64, and float32 for ``single_fused_3d``): ``c_fused_3d``, ``c_fused_3d_out``."""
        from convkit.plan import plan_call

        if not numba_engine.available()[0]:
            return {}
        rng = np.random.default_rng(3)

        def loop_time(x, k) -> float:
            plan = plan_call("correlate", x, k, self.capabilities, mode="same", method="direct")
            return best(lambda: numba_engine.correlate_3d(plan, x, k, self.pad, _map, cpu_threads()))

        x = rng.standard_normal((48, 48, 48))
        k3, k5 = rng.standard_normal((3, 3, 3)), rng.standard_normal((5, 5, 5))
        t3, t5 = loop_time(x, k3), loop_time(x, k5)
        n = x.size
        c_tap = max((t5 - t3) / (98 * n), 1e-13)
        t5_32 = loop_time(x.astype(np.float32), k5.astype(np.float32))
        return dict(c_fused_3d=c_tap, c_fused_3d_out=max((t3 - 27 * c_tap * n) / n, 1e-12),
                    single_fused_3d=min(max(t5_32 / t5, 0.1), 1.0))

    def engines_reason(self) -> str:
        """Why no host engine is used here (``""`` when one is)."""
        if not self.engines:
            if opencv_engine.installed() or torch_engine.installed() or numba_engine.installed():
                return "turned off: NumpyBackend(engines=False)"
            return (opencv_engine.reason_missing() or numba_engine.reason_missing()
                    or 'not installed: pip install "pyconvkit[opencv,numba]"')
        if self.numba and numba_engine.available()[0]:
            return ""
        ok, why = opencv_engine.available()
        return "" if ok else why

    def method_label(self, plan: Plan, kernel) -> str:
        """What ``auto`` runs for ``plan`` with this (user's) ``kernel``: the plan's method,
        ``"separable"``, with ``[numba]`` or ``[opencv]`` where a host engine runs it."""
        method = plan.method
        w = np.asarray(kernel).reshape(plan.k_shape)
        w = np.flip(w, axis=plan.axes) if plan.op == "convolve" else np.conj(w)
        if separable_pays(plan, self.capabilities) and np.all(np.isfinite(w)):
            if separable_factors(w, plan.axes, plan.acc_dtype) is not None:
                if self._numba_separable(plan):
                    return f"separable[{numba_engine.NAME}]"
                return f"separable[{opencv_engine.NAME}]" if self._opencv_separable(plan) else "separable"
        engine = self._fused_engine(plan, w)[0] if method == "direct" else None
        if method == "direct" and plan.ndim == 1 and self._numba_1d(plan) and np.all(np.isfinite(w)):
            engine = numba_engine.NAME
        if engine:
            return f"direct[{engine}]"
        if method == "oa" and self._opencv_dft_ok(plan):
            return f"oa[{opencv_engine.NAME}]"
        if method == "fft" and self._opencv_fft_ok(plan):
            return f"fft[{opencv_engine.NAME}]"
        return method

    def owns(self, x) -> bool:
        return isinstance(x, np.ndarray)

    def asarray(self, x):
        return np.asarray(x)

    def to_host(self, x) -> np.ndarray:
        return np.asarray(x)

    def all_finite(self, a) -> bool:
        if a.dtype.kind in "biu":
            return True
        if a.dtype.char in "fdFD" and a.flags.c_contiguous:
            # one pass without a temporary (faster than numpy.sum); NaN and Inf always reach it
            # (so do squares that overflow: then the full test)
            if math.isfinite(_sum_squares(a)):
                return True
            return bool(np.all(np.isfinite(a)))
        # one sum (no temporary) is enough when finite: NaN and Inf always reach it
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.sum(a)
        if math.isfinite(abs(complex(total))) if a.dtype.kind == "c" else math.isfinite(float(total)):
            return True
        return bool(np.all(np.isfinite(a)))

    # -- auto's S9 checks with one pass over the data: finiteness, and a bound that no step overflows
    def _data_bound(self, plan: Plan, x) -> float | None:
        """``None`` when ``x`` holds NaN/Inf; else a bound on ``max |pad(x)|`` (``inf``: none
        known). One pass (``sum |x|^2``) over contiguous data: by ``cv2.norm`` where the
        engines run (single-threaded, 3x faster than ``numpy.einsum`` on 128x128 to 512x512
        float64), else :func:`_sum_squares`."""
        if not (x.dtype.char in "fdFD" and x.flags.c_contiguous):
            sq = math.nan
        elif x.dtype.char in "fd" and self._opencv_sums() and x.size < 2**31:
            sq = opencv_engine.sum_squares(x)
        else:
            sq = _sum_squares(x)
        if not math.isfinite(sq):
            return None if not self.all_finite(x) else math.inf
        fill = abs(complex(plan.fillvalue)) if plan.boundary == "constant" else 0.0
        return max(math.sqrt(sq), fill)

    def _opencv_sums(self) -> bool:
        """Whether ``auto``'s data passes run on OpenCV (:meth:`_data_bound`)."""
        return self.engines and opencv_engine.available()[0]

    def _abs_sum(self, w) -> float:
        """``sum |w|`` of the (small) kernel, not finite when a tap is NaN/Inf (or when the sum
        overflows: the caller then takes the exact path that needs no bound). One call instead
        of a finiteness test and a sum."""
        if w.dtype.char in "fd" and 0 < w.size < 2**31 and self._opencv_sums():
            # in memory order: a view of the flipped kernel's taps, or a copy as numpy.abs makes
            return float(opencv_engine.abs_sum(w.ravel(order="K")))
        with np.errstate(all="ignore"):
            return float(np.sum(np.abs(w)))

    def run_method(self, plan: Plan, x, w):
        """:meth:`ArrayBackend.run_method` with one pass over the data for ``auto``'s FFT
        and overlap-add: it finds NaN/Inf (then direct, S9) and bounds every intermediate
        value, so the result needs no finiteness pass unless the data come near the float range."""
        if not (plan.nan_safe and plan.method in ("fft", "oa") and plan.acc_dtype.kind in "fc"):
            return super().run_method(plan, x, w)
        peak = self._data_bound(plan, x)
        taps = self._abs_sum(w)
        if peak is None or not math.isfinite(taps):
            return self.direct(plan, x, w)
        gain = self._per_plan("fft_gain", plan, _fft_gain) * taps
        out = self.transform(plan, x, w, plan.method)
        if not cannot_overflow(plan.acc_dtype, peak, gain) and not self.all_finite(out):
            out = self.direct(plan, x, w)  # finite data whose transform overflowed (S9)
        return out

    def try_separable(self, plan: Plan, x, w):
        """:meth:`ArrayBackend.try_separable` with one pass over the data (finiteness and a
        bound on the passes), which spares ``execute`` its finiteness pass over the result."""
        if not self._per_plan("separable_pays", plan, lambda p: separable_pays(p, self.capabilities)):
            return None
        # most kernels fail the rank-1 test at one tap; a NaN/Inf one fails it too (factors: finite)
        factors = separable_factors(w, plan.axes, plan.acc_dtype)
        if factors is None:
            return None
        threads = self._numba_separable(plan)
        if threads:
            # no data pass: the loop's test of its outputs finds NaN/Inf data and passes that overflowed
            out, total = numba_engine.correlate_separable(plan, x, factors, self.pad, _map, threads)
            return (out, True) if math.isfinite(total) else None
        if self._opencv_separable(plan) and _every_tap_nonzero(factors, plan.dilation):
            # no data pass: OpenCV multiplies every tap, none zero, so a NaN/Inf datum (or an
            # overflow) reaches every output whose window holds it; one sum of the fresh output
            # (still in cache) finds it, and the plan's own method then computes the call (S9)
            out = self.separable_passes(plan, x, factors, None)
            return (out, True) if self._output_finite(out) else None
        peak = self._data_bound(plan, x)
        if peak is None:
            return None  # NaN/Inf data: the plan's method puts them where S9 says
        out = self.separable_passes(plan, x, factors, self.separable_ndimage())
        return out, cannot_overflow(plan.acc_dtype, peak, separable_gain(factors))

    def _output_finite(self, out) -> bool:
        """Whether a result just written is finite: one ``cv2.sumElems`` pass where it can
        read it (contiguous float32/float64; faster than ``cv2.norm`` or NumPy, and the data
        are still in cache), else :meth:`all_finite`. A finite result whose sum overflows
        counts as not finite (the caller recomputes it: slower, never wrong)."""
        if out.dtype.char in "fd" and out.flags.c_contiguous and 0 < out.size < 2**31:
            return math.isfinite(opencv_engine.total(out))
        return self.all_finite(out)

    # -- the canonical form (the separable choice of method="auto": ArrayBackend.execute)
    def execute(self, plan: Plan, in1, in2):
        lane = self._per_plan("lane", plan, self._lane)
        if lane == "1d":
            return self._execute_1d_direct(plan, in1, in2)
        if lane == "fused":
            out = self._execute_fused(plan, in1, in2)
            if out is not None:
                return out
        elif lane == "dft":
            out = self._execute_dft(plan, in1, in2)
            if out is not None:
                return out
        return super().execute(plan, in1, in2)

    def _lane(self, plan: Plan) -> str:
        """How :meth:`execute` runs ``plan`` (shapes only, kept per plan): ``"1d"`` (a 1-D direct
        call's fewest steps), ``"fused"`` (a fused engine's loop unless the kernel's values rule
        it out), ``"dft"`` (an FFT on OpenCV's DFT, :meth:`_execute_dft`) or ``""`` (the
        canonical form's general steps)."""
        if plan.scalar or self.gather_pays(plan):
            return ""
        if plan.method == "fft":
            if plan.flip_conj_result or plan.out_dtype != plan.acc_dtype or not self._opencv_fft_ok(plan):
                return ""
            return "dft" if self._per_plan("dft-period", plan, self._one_image_period) else ""
        if plan.method != "direct":
            return ""
        step = self._per_plan("direct-step", plan, self._direct_step)
        if plan.ndim == 1:
            return "" if step == "phases" else "1d"
        if step:
            return ""
        return "fused" if self.engines and self._fused_plan(plan) else ""

    def _execute_dft(self, plan: Plan, in1, in2):
        """The canonical form of an FFT on OpenCV's DFT over one image (:meth:`_one_image_period`)
        with the fewest Python steps (a 64x64 image's FFT takes 0.1-0.2 ms: every step shows):
        ``ArrayBackend._execute``'s steps for a real 2-D plan whose result needs no flip or
        cast; ``None`` where the operands need a cast (the general steps then run)."""
        x, k = (in2, in1) if plan.swap else (in1, in2)
        acc = plan.acc_dtype
        if x.dtype != acc or k.dtype != acc:
            return None
        x, k = x.reshape(plan.x_shape), k.reshape(plan.k_shape)
        w = k[::-1, ::-1] if plan.op == "convolve" else k  # the canonical kernel (real: no conjugate)
        if not plan.nan_safe:
            return self.transform(plan, x, w, "fft")  # only OpenCV runs: no floating-point warnings
        with np.errstate(all="ignore"):  # S13, as ArrayBackend.execute
            out = self.separable_result(plan, x, w)
            return self.run_method(plan, x, w) if out is None else out

    @staticmethod
    def _lean_operands(plan: Plan, in1, in2):
        """``(x, k)`` of the lean paths: swapped (S3) and in the accumulation dtype."""
        x, k = (in2, in1) if plan.swap else (in1, in2)
        acc = plan.acc_dtype
        if x.dtype != acc or k.dtype != acc:
            with np.errstate(all="ignore"):  # dtype= may round huge values to Inf: intended
                x, k = x.astype(acc), k.astype(acc)
        return x, k

    @staticmethod
    def _lean_result(plan: Plan, out):
        """A lean path's result in the plan's output dtype."""
        if out.dtype == plan.out_dtype:
            return out
        with np.errstate(all="ignore"):  # float16 results: rounding to Inf is intended
            return out.astype(plan.out_dtype)

    def _execute_fused(self, plan: Plan, in1, in2):
        """The canonical form of a 2-D direct call through a fused engine's loop with the fewest
        Python steps (mid-size images take 0.1 ms: every step shows), after ``auto``'s
        separable test where it pays; ``None`` when the kernel's values rule the engines out
        (the general path then runs)."""
        x, k = self._lean_operands(plan, in1, in2)
        w = k.reshape(plan.k_shape)
        if plan.op == "convolve":
            w = w[_flip_index(plan)]
        x = x.reshape(plan.x_shape)
        out = None
        if self._routes(plan).separable_pays:
            with np.errstate(all="ignore"):  # S13, as ArrayBackend.execute
                out = self.separable_result(plan, x, w)
        if out is None:
            out = self._fused_direct(plan, x, w)
            if out is None:
                return None
        if plan.flip_conj_result:
            out = out[_flip_index(plan)]
        return self._lean_result(plan, out)

    def separable_ndimage(self):
        import scipy.ndimage

        return scipy.ndimage

    def _execute_1d_direct(self, plan: Plan, in1, in2):
        """The canonical form for 1-D direct calls with the fewest Python steps (small-call overhead).

        ``numpy.convolve`` raises no floating-point warnings; the steps that could (casts, the
        shift-and-add) run under ``numpy.errstate`` (S13, as ``ArrayBackend.execute``)."""
        x, k = self._lean_operands(plan, in1, in2)
        acc = plan.acc_dtype
        w = k[::-1] if plan.op == "convolve" else (np.conj(k) if acc.kind == "c" else k)
        if plan.stride == (1,):
            out = self._direct_1d(plan, x, w)
        else:
            with np.errstate(all="ignore"):
                out = super().direct(plan, x, w)
        if plan.flip_conj_result:
            out = out[::-1]
            if acc.kind == "c":
                out = np.conj(out)
        return self._lean_result(plan, out)

    # -- threads per call: a step too small to pay for waking another core runs on one
    def threads_for(self, seconds: float) -> int:
        """Cores for a step the cost model puts at ``seconds`` on one core: all of them, or one
        below ``capabilities.thread_min_time`` (waking an idle core costs tens of microseconds,
        far more on a busy or virtual machine). No result depends on it (S8)."""
        return cpu_threads() if seconds >= self.capabilities.thread_min_time else 1

    def _fft_workers(self, shape, s, axes) -> int:
        """``workers`` for one transform: points times log2(length), at ``c_fft`` each."""
        lengths = [s[i] if s is not None else shape[a] for i, a in enumerate(axes)]
        points = math.prod(shape) // max(math.prod(shape[a] for a in axes), 1) * math.prod(lengths)
        work = points * sum(math.log2(max(n, 2)) for n in lengths)
        return self.threads_for(self.capabilities.c_fft * work)

    # -- FFT primitives from scipy.fft: float32 stays float32, cores by size
    def rfftn(self, a, s, axes):
        import scipy.fft

        return scipy.fft.rfftn(a, s=s, axes=axes, workers=self._fft_workers(a.shape, s, axes))

    def irfftn(self, a, s, axes):
        import scipy.fft

        return scipy.fft.irfftn(a, s=s, axes=axes, workers=self._fft_workers(a.shape, s, axes))

    def fftn(self, a, s, axes):
        import scipy.fft

        return scipy.fft.fftn(a, s=s, axes=axes, workers=self._fft_workers(a.shape, s, axes))

    def ifftn(self, a, s, axes):
        import scipy.fft

        return scipy.fft.ifftn(a, s=s, axes=axes, workers=self._fft_workers(a.shape, s, axes))

    def next_fast_len(self, n: int, real: bool) -> int:
        import scipy.fft

        return scipy.fft.next_fast_len(n, real=real)

    def linear_conv(self, x, wf, sizes, axes, real, method, check_finite=False, keep=None):
        import scipy.fft

        if method == "oa":
            import scipy.signal

            # threads only pay for many long blocks: small inputs or short kernels (short blocks)
            # lose more to thread start-up than the second core gives back (measured, 2 cores)
            taps = math.prod(wf.shape[a] for a in axes)
            if not self.all_finite(wf):
                # overlap-add may split the kernel into blocks: a NaN/Inf tap would then reach only
                # some outputs, while S9 (and FFT behaviour) make every output non-finite
                return self.linear_conv(x, wf, sizes, axes, real, "fft", check_finite, keep)
            if len(axes) == 1:
                axis = axes[0]
                if x.shape[axis] < _OA_THREAD_MIN_SIZE:
                    out = overlap_add_full(x, wf, axis)
                else:
                    # fixed blocks (S8): the same cut, so the same bits, on one core or many
                    blocks = _quiet(lambda seg: overlap_add_full(seg, wf, axis))
                    out = _full_in_blocks(x, wf, axis, 0, x.shape[axis] + wf.shape[axis] - 1, blocks,
                                          block=_oa_block(wf.shape[axis]))
            else:
                workers = -1 if x.size >= _OA_THREAD_MIN_SIZE and taps >= _OA_THREAD_MIN_TAPS else 1
                with scipy.fft.set_workers(workers):
                    out = scipy.signal.oaconvolve(x, wf, mode="full", axes=axes)
            return out if keep is None else out[keep]
        if not real:
            return super().linear_conv(x, wf, sizes, axes, real, method, check_finite, keep)
        order = [a % x.ndim for a in axes]
        if method == _OPENCV_FFT and x.ndim == 2 and sorted(order) == [0, 1]:
            period = (sizes[order.index(0)], sizes[order.index(1)])  # in the arrays' axis order
            if _dft_fits(x, wf, period, self.capabilities.fused_fft_points):
                check = functools.partial(self.check_dc, axes=(0, 1)) if check_finite else None
                return opencv_engine.dft_linear_conv(x, wf, period, keep, check)
        return self._real_fft_conv(x, wf, list(sizes), list(axes), check_finite, keep)

    def _real_fft_conv(self, x, wf, sizes: list, axes: list, check_finite: bool, keep):
        """:meth:`linear_conv` of real data through one FFT, one axis at a time so that no
        transform runs over rows that are all zeros or that ``keep`` drops: the real-axis
        transform (the last of ``axes``) over the rows of ``x`` and of the kernel only (the
        other axes' transforms pad them), and its inverse over the rows ``keep`` selects only
        (1024x1024 float32 with 63x63: 18% faster than ``rfftn``/``irfftn`` over the padded
        arrays, docs/performance.md)."""
        import scipy.fft

        last, rest = axes[-1] % x.ndim, axes[:-1]
        spec = scipy.fft.rfft(x, n=sizes[-1], axis=last,
                              workers=self._fft_workers(x.shape, sizes[-1:], [last]))
        kspec = scipy.fft.rfft(wf, n=sizes[-1], axis=last,
                               workers=self._fft_workers(wf.shape, sizes[-1:], [last]))
        if rest:
            spec = scipy.fft.fftn(spec, s=sizes[:-1], axes=rest, overwrite_x=True,
                                  workers=self._fft_workers(spec.shape, sizes[:-1], rest))
            kspec = scipy.fft.fftn(kspec, s=sizes[:-1], axes=rest, overwrite_x=True,
                                   workers=self._fft_workers(kspec.shape, sizes[:-1], rest))
        if check_finite:
            self.check_dc(spec, axes)
            self.check_dc(kspec, axes)
        if np.broadcast_shapes(spec.shape, kspec.shape) == spec.shape:
            spec *= kspec
        else:
            spec = spec * kspec
        del kspec
        if rest:
            spec = scipy.fft.ifftn(spec, s=sizes[:-1], axes=rest, overwrite_x=True,
                                   workers=self._fft_workers(spec.shape, sizes[:-1], rest))
        if keep is not None:  # the rows kept, all of the real axis's frequencies
            spec = spec[tuple(slice(None) if a == last else k for a, k in enumerate(keep))]
        out = scipy.fft.irfft(spec, n=sizes[-1], axis=last, overwrite_x=True,
                              workers=self._fft_workers(spec.shape, sizes[-1:], [last]))
        if keep is None:
            return out
        return out[tuple(k if a == last else slice(None) for a, k in enumerate(keep))]

    # -- direct: library kernels where they are equivalent
    def direct(self, plan: Plan, x, w):
        step = self._per_plan("direct-step", plan, self._direct_step)
        if step == "phases":
            phases, kernel, sub = polyphase.split(plan, self.pad(polyphase.whole_periods(plan), x), w)
            return polyphase.merge(plan, self.direct(sub, phases, kernel))
        if step == "shift-add":
            return super().direct(plan, x, w)
        if plan.ndim == 1 and plan.stride == (1,):
            return self._direct_1d(plan, x, w)
        out = self._fused_direct(plan, x, w) if self.engines else None
        if out is not None:
            return out
        if self.ndimage_ok(plan, w):
            import scipy.ndimage

            return self.ndimage_direct(plan, x, w, scipy.ndimage)
        return super().direct(plan, x, w)

    def transform(self, plan: Plan, x, w, method: str, check_finite: bool = False):
        if method == "oa" and self._opencv_dft_ok(plan):
            # auto's overlap-add on finite data (checked: nan_safe) through OpenCV's DFT in tiles
            lengths, threaded = self._per_plan("dft-tiles", plan, self._dft_tiles)
            return opencv_engine.tiled_correlate(plan, x, self.dilate(plan, w), self.pad, lengths, _map,
                                                 cpu_threads() if threaded else 1)
        if method == "fft" and self._opencv_fft_ok(plan):
            # float data only: integers keep scipy.fft, the FFT their exactness rule is proved for
            period = self._per_plan("dft-period", plan, self._one_image_period)
            if period and not check_finite and x.dtype == w.dtype:
                # fft_corr's steps, their shapes worked out once per plan
                return opencv_engine.dft_linear_conv(x, w[::-1, ::-1], *period)
            return self.fft_corr(plan, x, w, _OPENCV_FFT, check_finite)
        return super().transform(plan, x, w, method, check_finite)

    def _dft_tiles(self, plan: Plan) -> tuple[tuple[int, int], bool]:
        """The tiles' transform lengths of :func:`opencv_engine.tiled_correlate`, and whether they
        run on threads (the cost model's pick, :func:`convkit.choose.dft_tiles`), for the valid
        part of the padded image."""
        axes = sorted(plan.axes)
        me = [plan.effective_kernel[plan.axes.index(a)] for a in axes]
        padded = [plan.x_shape[a] + sum(plan.pads[plan.axes.index(a)]) for a in axes]
        return dft_tiles(tuple(max(n - m + 1, 1) for n, m in zip(padded, me)), tuple(me), self.capabilities)

    def _one_image_period(self, plan: Plan) -> tuple | None:
        """``(period, keep)`` of :meth:`fft_corr` for a plan whose FFT runs on OpenCV's DFT with
        none of its padding or reshaping steps (one 2-D image, its axes in order, zero fill
        within the kernel's reach, no dilation), where :func:`_dft_fits` holds; else ``None``."""
        if plan.ndim != 2 or plan.axes != (0, 1) or any(d != 1 for d in plan.dilation):
            return None
        me = list(plan.k_shape)
        if not pads_in_reach(plan, me):
            return None
        sizes, keep = self.fft_period(plan, plan.x_shape, me, [lo for lo, _ in plan.pads], True)
        fits = _period_fits(plan.x_shape, me, sizes, self.capabilities.fused_fft_points)
        return (tuple(sizes), keep) if fits else None

    def _opencv_fft_ok(self, plan: Plan) -> bool:
        """Whether the FFT method runs on OpenCV's DFT (:func:`opencv_engine.dft_linear_conv`):
        one real float32/float64 image whose transforms are small enough
        (:func:`convkit.choose.fused_fft_applies`), any boundary, stride or dilation. Kept per
        plan (20 us a call on a 128x128 image)."""
        return self._per_plan("fft[opencv]", plan, self._opencv_fft_applies)

    def _opencv_fft_applies(self, plan: Plan) -> bool:
        caps = self.capabilities
        geo = dict(x_shape=plan.x_shape, k_shape=plan.k_shape, axes=plan.axes, pads=plan.pads,
                   dilation=plan.dilation, caps=caps, dtype=plan.acc_dtype)
        return (self.engines and plan.out_dtype.kind == "f" and fused_fft_applies(**geo)
                and opencv_engine.available()[0])

    def _opencv_dft_ok(self, plan: Plan) -> bool:
        """Whether ``auto``'s overlap-add runs as OpenCV's tiled-DFT filter: a plan that
        :func:`opencv_engine.applies` to but for its kernel length, chosen by ``auto`` (whose
        NaN-safe run has found the data finite) because the cost model put it first."""
        caps = self.capabilities
        return (self.engines and plan.nan_safe and caps.c_fused_dft > 0 and math.prod(plan.x_shape) > 0
                and opencv_engine.applies(plan, "dft") and opencv_engine.available()[0])

    def writes_whole_output(self, plan: Plan) -> bool:
        """Whether a host engine writes this plan's result as one whole array (an aligned one
        within :func:`~convkit.backends._base.aligned_outputs`): OpenCV's filters or Numba's
        loop, stride 1 and an output the input's size (no valid part cropped). Shapes only; the
        kernel's values may still send a call elsewhere."""
        if plan.stride != (1,) * len(plan.axes):
            return False
        if any(plan.out_shape[a] != plan.x_shape[a] for a in plan.axes):
            return False
        if plan.method == "direct":
            return self.direct_engine(plan) is not None
        return plan.method == "oa" and self._opencv_dft_ok(plan)

    def _opencv_separable(self, plan: Plan) -> bool:
        """Whether ``cv2.sepFilter2D`` runs ``plan``'s separable passes (kept per plan)."""
        return self.engines and self._per_plan("opencv-separable", plan, _opencv_separable)

    def separable_passes(self, plan: Plan, x, factors, ndimage):
        if self._opencv_separable(plan):
            dilated = []
            for f, d in zip(factors, plan.dilation):
                if d == 1:
                    dilated.append(f.astype(plan.acc_dtype))
                    continue
                fd = np.zeros((f.size - 1) * d + 1, dtype=plan.acc_dtype)
                fd[::d] = f
                dilated.append(fd)
            cores = self._routes(plan).opencv_separable_cores if self.engines else 1
            return opencv_engine.correlate_separable(plan, x, dilated, self.pad, _map, _cores_now(cores))
        return super().separable_passes(plan, x, factors, ndimage)

    def _routes(self, plan: Plan) -> _Route:
        """:func:`_route` of ``plan``, and whether ``auto``'s separable test pays for it,
        kept per backend instance (every 2-D direct call asks; hashing the capabilities for a
        shared cache costs more than the call's other steps)."""
        return self._per_plan("route", plan, self._route_of)

    def _route_of(self, plan: Plan) -> _Route:
        caps = self.capabilities
        route = _route(plan, caps, self.numba, self.numba_always)
        return route._replace(separable_pays=separable_pays(plan, caps))

    def _per_plan(self, name: str, plan: Plan, compute):
        """``compute(plan)``, kept per backend instance (shapes only: a fact of the plan, the
        capabilities and the engines, asked on every call). New capabilities, or setting
        :attr:`engines` or :attr:`numba`, start the facts afresh."""
        if self._route_caps is not self.capabilities or len(self._route_cache) > _PLAN_FACTS:
            self._route_cache, self._route_caps = {}, self.capabilities
        key = (name, plan)
        found = self._route_cache.get(key, _UNKNOWN)
        if found is _UNKNOWN:  # a fact may be None: kept as well
            found = self._route_cache[key] = compute(plan)
        return found

    def direct_note(self, plan: Plan) -> str:
        """What ``convkit.explain`` says about a direct plan that leaves the engines' usual
        route (:meth:`_direct_step`), or ''."""
        step = self._per_plan("direct-step", plan, self._direct_step)
        if step == "phases":
            return (f"the dilation runs as one call on the input's {math.prod(plan.dilation)} phases "
                    "(x[r::dilation] on each dilated axis) with the undilated kernel: its taps only, not "
                    "its dilated length")
        if step == "shift-add":
            return ("direct runs as a shift-and-add, one pass per tap over the kept outputs (the filters "
                    "would compute every output at stride 1, or work through a dilated kernel's gaps)")
        return ""

    def _direct_step(self, plan: Plan) -> str:
        """How :meth:`direct` starts on ``plan`` (shapes only; kept per plan, and what
        :meth:`direct_note` says): ``"phases"`` (:meth:`_polyphase_pays`), ``"shift-add"`` (a
        strided float plan that the shift-and-add runs cheaper than OpenCV's filter,
        :meth:`_strided_shift_add`, or a strided or dilated float image off OpenCV's route
        that ``ndimage`` does not pay for), or ``""``: the engines' usual route, which the
        kernel's values may still change."""
        if self._polyphase_pays(plan):
            return "phases"
        if self._strided_shift_add(plan):
            return "shift-add"
        spaced = any(s > 1 for s in plan.stride) or any(d > 1 for d in plan.dilation)
        if (plan.ndim > 1 and spaced and plan.acc_dtype in (np.float32, np.float64)
                and not self._opencv_filter(plan) and not self.ndimage_pays(plan)):
            return "shift-add"  # what ndimage_ok would say; neither engine's loop takes the plan
        return ""

    def _polyphase_pays(self, plan: Plan) -> bool:
        """Whether a direct plan runs on its input's phases (:mod:`.polyphase`; shapes only):
        where :func:`convkit.choose.phases_cost` applies (1-D: from a dilation of
        ``phases_1d_from``, where the gaps ``numpy.convolve`` would multiply cost more than
        the phases' call; N-d: float32/float64), and on N-d data unless OpenCV's filter takes
        the dilated kernel (it skips the zeros) or the estimates say that ``scipy.ndimage``
        with the dilated kernel (on small footprints) or the shift-and-add is cheaper. Other
        dtypes keep the shift-and-add (one pass per tap already)."""
        if not polyphase.applies(plan):
            return False
        cost = phases_cost(x_shape=plan.x_shape, k_shape=plan.k_shape, axes=plan.axes, pads=plan.pads,
                           dilation=plan.dilation, caps=self.capabilities, dtype=plan.acc_dtype)
        if plan.ndim == 1 or cost == math.inf:
            return cost < math.inf
        if self._opencv_filter(plan):
            return False
        others = self._shift_add_cost(plan)
        if self.ndimage_pays(plan):
            others = min(others, self._ndimage_cost(plan))
        return cost < others

    def ndimage_pays(self, plan: Plan) -> bool:
        """Whether ``scipy.ndimage`` is estimated cheaper than the shift-and-add (shapes
        only). It computes every output at stride 1 and the stride is sliced (the shift-and-add
        reads the kept outputs' windows only), and a dilated kernel's footprint costs it a setup
        (:data:`_NDIMAGE_SETUP`): a large stride or dilation makes the shift-and-add cheaper.
        Kept per plan: every ``ndimage`` call asks."""
        return self._per_plan("ndimage", plan, lambda p: self._ndimage_cost(p) <= self._shift_add_cost(p))

    def _ndimage_cost(self, plan: Plan) -> float:
        """Estimated seconds of ``scipy.ndimage.correlate`` with the dilated kernel (every
        output at stride 1; the stride is sliced)."""
        macs = polyphase.stride1_outputs(plan) * plan.taps
        return self.capabilities.c_direct * macs + _NDIMAGE_SETUP * math.prod(plan.effective_kernel) ** 2

    def _shift_add_cost(self, plan: Plan) -> float:
        """Estimated seconds of the shift-and-add: one pass over the (strided) output per tap."""
        return self.capabilities.c_out * math.prod(plan.out_shape) * plan.taps

    def _strided_shift_add(self, plan: Plan) -> bool:
        """Whether a strided float32/float64 plan that OpenCV's filter would run takes the
        shift-and-add instead (shapes only): OpenCV computes every output at stride 1 and the
        stride is sliced, the shift-and-add reads the kept outputs' windows only (a 3x3 kernel
        at stride 16 on a 4096x4096 image: 21 against 14 ms). :meth:`ndimage_pays` is the same
        test for ``ndimage``."""
        if plan.ndim == 1 or all(s == 1 for s in plan.stride):
            return False
        if plan.acc_dtype not in (np.float32, np.float64) or not self._opencv_filter(plan):
            return False
        fused = self.capabilities.c_fused * polyphase.stride1_outputs(plan) * plan.taps
        return self._shift_add_cost(plan) < fused

    def _opencv_filter(self, plan: Plan) -> bool:
        """Whether OpenCV's filter is the fused route of this plan's shapes (it takes a dilated
        kernel of up to 129/49 positions, skipping the zeros, and computes strides at stride 1)."""
        return bool(self.engines) and self._routes(plan).opencv

    def _fused_plan(self, plan: Plan) -> bool:
        """Whether a direct plan runs through a fused engine's loop (after ``auto``'s separable
        test where it pays) unless the kernel's values or absurd pads rule it out."""
        route = self._routes(plan)
        return route.numba >= 0 or route.opencv

    def _fused_engine(self, plan: Plan, w) -> tuple[str | None, int]:
        """The fused engine whose direct loop computes this plan with the canonical kernel
        ``w``, and the cores for Numba's: Numba's where it applies, its taps are finite and it
        is faster than OpenCV's (or OpenCV's does not run ``w``), else OpenCV's where it
        applies and runs ``w``; ``(None, 0)``: neither."""
        if not self.engines:
            return None, 0
        route = self._routes(plan)
        if route.numba > 0 and _finite_kernel(w.ravel()):  # the loop is faster: no OpenCV test
            return numba_engine.NAME, route.numba
        opencv = route.opencv and self.taps_ok(w)
        if route.numba >= 0 and not opencv and self.all_finite(w):
            return numba_engine.NAME, max(route.numba, 1)
        return (opencv_engine.NAME, route.opencv_cores) if opencv else (None, 0)

    def _numba_separable(self, plan: Plan) -> int:
        """Cores for Numba's separable loop on ``plan`` (:func:`_route`), or 0 where
        ``sepFilter2D`` (after auto's data pass) or the SciPy passes run it."""
        return max(self._routes(plan).numba_separable, 0) if self.engines else 0

    def direct_engine(self, plan: Plan) -> str | None:
        """The host engine that runs a direct ``plan`` with finite, non-zero taps
        (``convkit.explain``): :meth:`_fused_engine` without the kernel's values."""
        if not self.engines:
            return None
        if plan.ndim == 1:
            return numba_engine.NAME if self._numba_1d(plan) else None
        route = self._routes(plan)
        if route.numba >= 0 and (route.numba or not route.opencv):
            return numba_engine.NAME
        return opencv_engine.NAME if route.opencv else None

    def _fused_direct(self, plan: Plan, x, w):
        """``VALIDCORR(pad(x), dilate(w))[::stride]`` by the engine :meth:`_fused_engine`
        picks, or ``None``."""
        engine, threads = self._fused_engine(plan, w)
        if engine == numba_engine.NAME:
            return numba_engine.correlate(plan, x, w, self.pad, _map, _cores_now(threads))
        if engine == opencv_engine.NAME:
            return opencv_engine.correlate(plan, x, self.dilate(plan, w), self.pad, _map, _cores_now(threads))
        return None

    def _direct_1d(self, plan: Plan, x, w):
        """1-D, stride 1, with ``numpy.convolve`` where it computes S1's products (see module doc)."""
        if plan.dilation != (1,) and not (self.all_finite(x) and self._fill_finite(plan)):
            # the dilated kernel's inserted zeros would meet the NaN/Inf: they are not taps (S1)
            with np.errstate(all="ignore"):
                return super().direct(plan, x, w)
        loop_cores, full = self._per_plan("1d", plan, self._plan_1d)
        if loop_cores and _finite_kernel(w):
            return numba_engine.correlate_1d(plan, x, w, self.pad, _map, loop_cores)
        wd = (w if plan.dilation == (1,) else self.dilate(plan, w))[::-1]
        if full is not None and (full[2] or _finite_kernel(w)):
            # "full" skips the padded zeros: only a finite kernel gives the same numbers (S9)
            start, n_out, _, threaded = full
            if threaded:
                return _full_in_blocks(x, wd, 0, start, start + n_out,
                                       _quiet(lambda seg: _convolve_full(seg, wd)))
            if start == 0 and n_out == x.shape[0] + wd.shape[0] - 1:
                return _convolve_full(x, wd)
            return _convolve_full(x, wd)[start:start + n_out]
        me = wd.shape[0]
        xpad = self.pad(plan, x)
        if min(xpad.shape[0], me) <= _BLAS_DOT_TAPS:
            return np.convolve(xpad, wd, "valid")
        return _convolve_full(xpad, wd)[me - 1:xpad.shape[0]]

    def _plan_1d(self, plan: Plan) -> tuple:
        """How :meth:`_direct_1d` runs a 1-D plan (shapes only, kept per plan): the cores of
        Numba's loop (0: not it), and for a zero fill within the kernel's reach ``(start,
        n_out, no_pads, threaded)``: the slice of ``numpy.convolve``'s "full" output that is the
        result, and whether the call runs in blocks on every core (``None``: pad and run
        "valid")."""
        cores = 0
        if self._numba_1d(plan):
            caps = self.capabilities
            scale = caps.single_fused_1d if plan.acc_dtype == np.float32 else 1.0
            seconds = scale * (caps.c_fused_1d * plan.k_shape[0] + caps.c_fused_1d_out) * plan.out_shape[0]
            # the estimate is on every core; on one it takes about twice as long
            cores = self.threads_for(2 * seconds)
        (lo, hi), n_out = plan.pads[0], plan.out_shape[0]
        me = (plan.k_shape[0] - 1) * plan.dilation[0] + 1
        if not (plan.boundary == "constant" and plan.fillvalue == 0 and 0 <= lo < me and 0 <= hi < me):
            return cores, None
        start = me - 1 - lo
        caps = self.capabilities  # the whole one-core time: multiply-adds and per-output work
        threaded = self.threads_for((caps.c_direct_1d * me + caps.c_out) * n_out) > 1
        return cores, (start, n_out, lo == 0 and hi == 0, threaded)

    def _numba_1d(self, plan: Plan) -> bool:
        """Whether Numba's loop runs this 1-D direct plan (shapes only; the caller checks that
        the taps are finite): where it applies, from ``capabilities.fused_1d_taps`` taps and where
        ``numpy.convolve`` would take ``TIME_1D_FROM`` or more (``numba_always``: wherever it
        applies)."""
        if not self.numba:
            return False
        if not self.numba_always:  # the time first: it rules out the many small calls cheapest
            caps, m = self.capabilities, plan.k_shape[0]
            c_tap = caps.c_direct_1d or caps.c_direct
            if (c_tap * m + caps.c_out) * plan.out_shape[0] < numba_engine.TIME_1D_FROM:
                return False  # float32 below this too (single_direct_1d < 1)
            single = plan.acc_dtype == np.float32
            if single and (caps.single_direct_1d * c_tap * m + caps.c_out) * plan.out_shape[0] \
                    < numba_engine.TIME_1D_FROM:
                return False
            if m < caps.fused_1d_taps[0 if single else 1]:
                return False
        return numba_engine.applies_1d(plan) and numba_engine.available()[0]

    @staticmethod
    def _fill_finite(plan: Plan) -> bool:
        return plan.boundary != "constant" or bool(np.isfinite(plan.fillvalue))

    def ndimage_same(self, ndimage, plan: Plan, x, weights, pads, kw):
        axes = kw["axes"]
        if axes[0] == 0 and plan.boundary == "wrap":
            return ndimage.correlate(x, weights, **kw)  # wrap reads the far edge of the blocked axis
        halo = pads[0] if axes[0] == 0 else (0, 0)
        return self._blocked_filter(x, weights.size, 0, halo,
                                    lambda seg, o=None: ndimage.correlate(seg, weights, output=o, **kw))

    def _blocked_filter(self, x, taps: int, axis: int, halo: tuple[int, int], func):
        """``func(x)`` for a shape-preserving filter, computed in blocks along ``axis`` on all cores.

        ``func(seg, out=None)`` filters ``seg`` (into ``out`` when given).

        ``halo = (lo, hi)``: how many neighbours before/after a position the filter reads
        along ``axis`` (0 for an axis it does not filter). A block reads its halo from the real
        data, so only the true array edges see the boundary rule.
        """
        n = x.shape[axis]
        threads = self.threads_for(self.capabilities.c_direct * x.size * taps)
        if threads == 1 or n < threads * (2 + 2 * max(halo)):
            return func(x)
        out = np.empty(x.shape, dtype=x.dtype)
        lo, hi = halo

        pre = (slice(None),) * axis
        if lo == 0 and hi == 0:
            def job(a: int, b: int) -> None:
                func(x[pre + (slice(a, b),)], out[pre + (slice(a, b),)])

            _map(job, _blocks(n, _BLOCKS_PER_THREAD * threads))
            return out

        def job(a: int, b: int) -> None:
            s0, s1 = max(a - lo, 0), min(b + hi, n)
            seg = func(x[(slice(None),) * axis + (slice(s0, s1),)])
            out[pre + (slice(a, b),)] = seg[pre + (slice(a - s0, b - s0),)]

        _map(job, _blocks(n, _BLOCKS_PER_THREAD * threads))
        return out


backend = NumpyBackend()

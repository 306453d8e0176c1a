"""A fused direct loop compiled by Numba, run on convkit's threads: a host engine of the
NumPy backend (2-D images and batches; 1-D signals as one-row images, :func:`correlate_1d`;
3-D volumes and batches of them, :func:`correlate_3d`).

``cv2.filter2D`` runs a mid-size image (512x512) on one core; this loop reads each image row
once for all the taps of a kernel row, like OpenCV's, and the backend runs bands of output
rows on every core (each band one call that releases the GIL). On the 2-core development VM
that is 1.3-1.9x faster than ``cv2.filter2D`` on 500x500 to 1000x1000 images with 3x3 to 7x7
kernels (docs/performance.md). It is optional (``pip install "pyconvkit[numba]"``); without
it the backend runs OpenCV's filter or SciPy's as before.

What it is used for, and why it computes S1's products:

* float32 and float64 only; two convolution axes with the kernel of size 1 on every other
  axis (a batch of images is one band job list); stride 1 and no dilation (OpenCV's filter
  runs those: it drops the zeros a dilation inserts);
* finite taps (the loop skips the products of taps with the zero fill outside the image,
  which are ``0 * tap``; a NaN or Inf tap meets the fill in every window, S9: never here).
  Zero taps are multiplied like any other, so a NaN in the data stays exactly where S9 puts
  it, whatever the kernel;
* the zero fill of ``boundary="constant"`` is the loop's own; every other boundary rule, and
  a non-zero fill value, pads the image first (:meth:`ArrayBackend.pad`).

Each output is a sum of its products in a fixed order (kernel rows, then taps) in the input's
precision, within the S5 direct bound ``gamma_K``; bands never change it (S8).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import Any

import numpy as np

from ._base import even_spans, output_array, switched_off

__all__ = ["NAME", "PREFERRED_FROM", "SEPARABLE_FROM", "SMALL_FROM", "SMALL_FROM_WIDE", "THREADED_FROM",
           "TIME_1D_FROM", "TIME_3D_FROM", "ROW_BLOCK", "WIDE_ROW_BLOCK", "row_block", "wide_vectors",
           "installed", "available", "version", "reason_missing", "applies", "applies_1d", "applies_3d",
           "correlate", "correlate_1d", "correlate_3d", "correlate_separable"]

NAME = "numba"

#: set CONVKIT_NUMBA=0 to keep Numba out even where it is installed
_ENV = "CONVKIT_NUMBA"

#: OpenCV's filter time per image (the cost model's fused costs) from which the loop runs
#: instead, by dtype. The loop must win on one core where OpenCV's filter runs on one (up to
#: about 1000x1000 pixels): a busy machine can take the loop's second core away. On float64 it
#: does from a few hundred microseconds per image (about 300x300 pixels with 3x3); on float32
#: OpenCV's filter is 1.1-2.4x faster on one core, so the loop runs only images on which
#: OpenCV's filter itself runs on every core (docs/performance.md)
PREFERRED_FROM = {"f": 5e-3, "d": 1e-4}

#: kernels up to this many rows and columns get functions of their own for each shape
#: (``numba_kernels.small``): every tap is a constant-length loop that LLVM unrolls into
#: registers
SMALL = 7

#: taps summed in registers per pass over an output row by those functions, by dtype: more
#: would not fit the 16 vector registers of AVX2 (the measurements: docs/performance.md)
SMALL_PASS_TAPS = {"f": 10, "d": 9}

#: the same where LLVM may use AVX-512 (:func:`wide_vectors`: 32 vector registers), both dtypes:
#: 4x4 and 5x5 in one pass, 7x7 in passes of three kernel rows, 8-25% faster than passes of at
#: most 10 taps on 128x128 to 2000x2000 images (Zen 5, one core; docs/backends/numpy.md). The
#: bits do not change: every pass continues the same sum in the same order
WIDE_PASS_TAPS = 25

#: taps per pass of the general loop (kernels wider than ``numba_kernels.UNROLLED`` columns, and
#: 1-D kernels): blocks of 8, then one pass for the taps left
ROW_BLOCK = 8

#: the same where LLVM may use AVX-512 (:func:`wide_vectors`): blocks of 24 were 5-12% faster on
#: 2-D images (300x300 to 2000x2000, kernels 9x9 to 63x63) and 8-25% on 1-D signals (9 to 300
#: taps) than blocks of 8 (Zen 5, one core; docs/backends/numpy.md), with the same bits
WIDE_ROW_BLOCK = 24

#: the same for kernels up to ``SMALL`` taps a side (:func:`_small_kernel`), which run
#: functions of their own shape: on float64 they beat OpenCV's filter on one core at every
#: image size (8x8 to 500x500: 1.1-2.5x), on float32 from mid-size images (docs/backends/numpy.md).
#: From 10 us: below, a call would gain a few microseconds and the process's first such call
#: would load Numba's compiled functions (a second or so). Float32 on an AVX2 machine: from
#: 0.2 ms (500x500 5x5: 1.2x; 7x7 ties); with AVX-512 (:data:`SMALL_FROM_WIDE`) sooner
SMALL_FROM = {"f": 2e-4, "d": 1e-5}

#: :data:`SMALL_FROM` where LLVM compiles for AVX-512 (32 vector registers of 16 floats): on
#: float32 the functions then win from about 190x190 pixels with 5x5 and 160x160 with 7x7
#: (350x350: 1.4-1.5x; Zen 5, one core)
SMALL_FROM_WIDE = {"f": 3.5e-5, "d": 1e-5}

#: the same for kernels whose every tap one pass sums in registers (:func:`one_pass`: 3x3, or
#: up to 10 taps on float32 and 9 on float64, 25 on AVX-512 hosts, none wider or taller than 7):
#: there the loop beats OpenCV's filter on one core at every image size on float32 too (8x8 to
#: 500x500: 1.0-1.8x; 4x4 and 5x5 with AVX-512: docs/backends/numpy.md)
ONE_PASS_FROM = {"f": 1e-5, "d": 1e-5}

#: OpenCV's ``sepFilter2D`` time per image (the cost model's ``c_fused_sep``) from which the
#: separable loop (its column pass, row pass and the test of its outputs that replaces auto's
#: data pass) runs instead of that pass and OpenCV's filter; by dtype, where the loop wins on
#: one core (float32 with a 9x9-15x15 Gaussian from about 350x350 pixels, float64 from about
#: 130x130); wider row factors (21-31 taps) lose on images under 500x500 on float32
SEPARABLE_FROM = {"f": 2.5e-4, "d": 5e-5}

#: the call's estimated time from which the loop runs on every core: below it a second core
#: does not pay for its wake-up (the caller never waits for a core that has not started)
THREADED_FROM = 4e-4

#: fewest output rows in a band (a band is one compiled call: about 2 us to dispatch)
_MIN_BAND_ROWS = 16

#: 1-D: ``numpy.convolve``'s estimated time (the cost model's ``c_direct_1d`` and ``c_out``) from
#: which the loop runs instead (below, a call would pay Numba's start-up for microseconds); the
#: fewest taps are the backend's ``capabilities.fused_1d_taps``
TIME_1D_FROM = 5e-5

#: fewest outputs in a piece of a threaded 1-D call
_MIN_PIECE = 4096

#: 3-D: the loop's estimated time (the cost model's ``c_fused_3d`` and ``c_fused_3d_out``) from
#: which it runs instead of ``scipy.ndimage`` (10-15x slower: one pass over the volume per tap,
#: in float64): below, a call would gain microseconds and pay Numba's start-up
TIME_3D_FROM = 2e-5

_kernels: Any = None
_state: tuple[bool, str] | None = None


def installed() -> bool:
    """Whether ``numba`` can be found (no import: it takes a quarter of a second)."""
    return not switched_off(_ENV) and importlib.util.find_spec("numba") is not None


def reason_missing() -> str | None:
    """Why :func:`installed` is False: ``CONVKIT_NUMBA=0``, or ``None`` (not installed)."""
    return f"{_ENV}=0" if switched_off(_ENV) else None


def available() -> tuple[bool, str]:
    """``(True, "")`` once Numba and the loops import, else ``(False, why)``; imported on the first ask."""
    global _kernels, _state
    if _state is None:
        if switched_off(_ENV):
            _state = (False, f"{_ENV}=0")
        else:
            try:
                from . import numba_kernels
            except Exception as exc:  # not installed, or a Numba too old or broken for this NumPy
                _state = (False, f"numba does not import ({type(exc).__name__}: {exc})".strip())
            else:
                _kernels, _state = numba_kernels, (True, "")
    return _state


def version() -> str:
    """Numba's version, or ``""`` when it is not available."""
    if not available()[0]:
        return ""
    import numba

    return str(numba.__version__)


def applies(plan) -> bool:
    """Whether the loop computes this plan: float32/float64, two axes (the kernel of size 1 on
    the others), stride 1, no dilation, a non-empty input; shapes and dtypes only (the caller
    checks that the taps are finite)."""
    if plan.acc_dtype not in (np.float32, np.float64) or len(plan.axes) != 2 or plan.scalar:
        return False
    if plan.stride != (1, 1) or plan.dilation != (1, 1) or math.prod(plan.x_shape) == 0:
        return False
    return all(plan.k_shape[a] == 1 for a in range(plan.ndim) if a not in plan.axes)


def applies_1d(plan) -> bool:
    """Whether the loop computes this 1-D plan (one axis, nothing else): float32/float64,
    stride 1, no dilation, a non-empty input; shapes and dtypes only (the caller checks that
    the taps are finite)."""
    return (plan.ndim == 1 and not plan.scalar and plan.acc_dtype in (np.float32, np.float64)
            and plan.stride == (1,) and plan.dilation == (1,) and plan.x_shape[0] > 0)


def correlate_1d(plan, x: np.ndarray, w: np.ndarray, pad, run_jobs, threads: int) -> np.ndarray:
    """``VALIDCORR(pad(x), w)`` for a plan that :func:`applies_1d` (``w``: the canonical
    kernel, finite): the 2-D band function on a one-row image. With ``threads > 1``, pieces of
    the output (two per core) run through ``run_jobs``; each piece reads the part of ``x`` its
    windows cover, so its outputs are the same sums as in one call (S8)."""
    padded = not (plan.boundary == "constant" and plan.fillvalue == 0)
    lo, hi = (0, 0) if padded else plan.pads[0]
    if padded:
        x = pad(plan, x)
    x = np.ascontiguousarray(x)
    m = w.shape[0]
    n = x.shape[0]
    n_out = n + lo + hi - m + 1
    kernel = np.ascontiguousarray(w).reshape(1, m)
    band = _kernels.rows(m, row_block())
    out = output_array((n_out,), x.dtype)
    out = np.empty(n_out, dtype=x.dtype) if out is None else out

    def piece(c0: int, c1: int) -> None:
        s0, s1 = max(c0 - lo, 0), min(c1 - lo + m - 1, n)
        if s1 <= s0:  # every window of the piece lies in the fill
            out[c0:c1] = 0
            return
        band(x[s0:s1].reshape(1, -1), kernel, 0, lo + s0 - c0, out[c0:c1].reshape(1, -1), 0, 1)

    # the outputs whose windows reach past x (the first lo, the last hi) are pieces of their
    # own: the band function copies a piece's signal with zeros around it only where they do
    first = min(max(lo, 0), n_out)
    inner = (first, max(n_out - max(hi, 0), first))
    count = max(1, min(2 * threads, (inner[1] - inner[0]) // _MIN_PIECE)) if threads > 1 else 1
    jobs = [(a, b) for a, b in [(0, inner[0]), *even_spans(inner[1] - inner[0], count, inner[0]),
                                (inner[1], n_out)] if b > a]
    _run(piece, jobs, run_jobs, threads)
    return out


def applies_3d(plan) -> bool:
    """Whether :func:`correlate_3d` computes this plan: float32/float64, three axes (the kernel
    of size 1 on the others: a batch of volumes), stride 1, no dilation, a non-empty input;
    shapes and dtypes only (the caller checks that the taps are finite)."""
    if plan.acc_dtype not in (np.float32, np.float64) or len(plan.axes) != 3 or plan.scalar:
        return False
    if any(s != 1 for s in plan.stride) or any(d != 1 for d in plan.dilation) or math.prod(plan.x_shape) == 0:
        return False
    return all(plan.k_shape[a] == 1 for a in range(plan.ndim) if a not in plan.axes)


def correlate_3d(plan, x: np.ndarray, w: np.ndarray, pad, run_jobs, threads: int) -> np.ndarray:
    """``VALIDCORR(pad(x), w)`` for a plan that :func:`applies_3d` (``w``: the canonical kernel,
    finite). The volume is padded first by the backend's ``pad(plan, x)`` (every boundary rule;
    a zero fill then adds ``0 * tap``, which leaves each sum as skipping it would: +0 or -0
    added to a sum started from +0). Planes of the output (two bands per core, or whole volumes
    where there are at least two per core) run through ``run_jobs`` with ``threads > 1``; each
    output is the same sum whatever the bands (S8)."""
    axes = tuple(sorted(plan.axes))
    m = tuple(plan.k_shape[a] for a in axes)
    kernel = np.ascontiguousarray(w.reshape(m))
    x = pad(plan, x)
    moved = axes != tuple(range(plan.ndim - 3, plan.ndim))
    vols = np.moveaxis(x, axes, (-3, -2, -1)) if moved else x
    if not vols.flags.c_contiguous:
        vols = np.ascontiguousarray(vols)
    shape = vols.shape[:-3] + tuple(n - k + 1 for n, k in zip(vols.shape[-3:], m))
    out = output_array(shape, vols.dtype)
    out = np.empty(shape, dtype=vols.dtype) if out is None else out
    band = _kernels.volume(m[2])
    flat_in = vols.reshape((-1,) + vols.shape[-3:])
    flat_out = out.reshape((-1,) + shape[-3:])

    def job(v: int, a: int, b: int) -> None:
        band(flat_in[v], kernel, flat_out[v], a, b)

    _run(job, _band_jobs(flat_in.shape[0], shape[-3], threads, 1), run_jobs, threads)
    return np.moveaxis(out, (-3, -2, -1), axes) if moved else out


@functools.lru_cache(maxsize=512)
def _layout(plan) -> tuple:
    """How a plan runs (cached): the two axes in order, whether they must be moved last, the
    kernel's extent, the pads, and whether the image is padded first (any boundary rule but a
    zero fill)."""
    axes = tuple(sorted(plan.axes))
    order = [plan.axes.index(a) for a in axes]
    m = tuple(plan.k_shape[a] for a in axes)
    padded = not (plan.boundary == "constant" and plan.fillvalue == 0)
    pads = tuple((0, 0) if padded else plan.pads[i] for i in order)
    moved = axes != (plan.ndim - 2, plan.ndim - 1)
    return axes, moved, m, pads, padded


def _small_kernel(plan) -> bool:
    """Whether :func:`correlate` runs ``plan`` through the function of its kernel's shape
    (:func:`numba_kernels.small`): at most ``SMALL`` taps a side, the columns' leading pad not
    negative."""
    _, _, m, pads, _ = _layout(plan)
    return max(m) <= SMALL and pads[1][0] >= 0


def one_pass(plan) -> bool:
    """Whether :func:`correlate` sums every tap of ``plan``'s kernel in registers in one pass
    over each output row (a small kernel of at most :func:`pass_taps` taps for its dtype: 4x4
    and 5x5 too on AVX-512 hosts)."""
    _, _, m, _, _ = _layout(plan)
    char = plan.acc_dtype.char
    return _small_kernel(plan) and char in SMALL_PASS_TAPS and m[0] * m[1] <= pass_taps(char)


def preferred_from(plan) -> dict:
    """:data:`ONE_PASS_FROM` for :func:`one_pass` plans, :data:`SMALL_FROM` for other small
    kernels (:data:`SMALL_FROM_WIDE` on AVX-512 hosts), else :data:`PREFERRED_FROM`."""
    if not _small_kernel(plan):
        return PREFERRED_FROM
    if one_pass(plan):
        return ONE_PASS_FROM
    return SMALL_FROM_WIDE if wide_vectors() else SMALL_FROM


def pass_taps(char: str) -> int:
    """Taps the per-shape functions sum in registers per pass for dtype ``char`` (``"f"`` or
    ``"d"``): :data:`WIDE_PASS_TAPS` on AVX-512 hosts, else :data:`SMALL_PASS_TAPS`."""
    return WIDE_PASS_TAPS if wide_vectors() else SMALL_PASS_TAPS[char]


def row_block() -> int:
    """Taps the general loop sums in registers per pass: :data:`WIDE_ROW_BLOCK` on AVX-512
    hosts, else :data:`ROW_BLOCK`."""
    return WIDE_ROW_BLOCK if wide_vectors() else ROW_BLOCK


def wide_vectors() -> bool:
    """Whether LLVM (through Numba, which compiles for this CPU) may use AVX-512 here: then the
    small kernels' functions keep more taps in registers. ``False`` where the features cannot
    be read, or Numba is not loaded."""
    return _kernels is not None and _host_avx512()


@functools.cache
def _host_avx512() -> bool:
    try:
        import llvmlite.binding

        return bool(llvmlite.binding.get_host_cpu_features().get("avx512f", False))
    except Exception:  # a platform where LLVM cannot list them: the conservative thresholds
        return False


def correlate(plan, x: np.ndarray, w: np.ndarray, pad, run_jobs, threads: int) -> np.ndarray:
    """``VALIDCORR(pad(x), w)`` for a plan that :func:`applies` (``w``: the canonical kernel,
    finite). ``pad(plan, x)`` is the backend's padding (used for every boundary rule but a
    zero fill); ``run_jobs(func, jobs)`` runs ``func(*job)`` for every job, on up to
    ``threads`` cores (the backend's thread pool); bands of output rows are the jobs.
    Kernels up to :data:`numba_kernels.SMALL` taps a side (the leading pad of the columns not
    negative) run the function of their shape (the same bits, faster). Three-axis plans
    (:func:`applies_3d`) run :func:`correlate_3d`."""
    if len(plan.axes) == 3:
        return correlate_3d(plan, x, w, pad, run_jobs, threads)
    _, _, m, _, _ = _layout(plan)
    kernel = np.ascontiguousarray(w.reshape(m))
    small = _small_kernel(plan)  # the per-shape functions, which also take stacks of images
    if small:
        band = _kernels.small(m[0], m[1], plan.acc_dtype, pass_taps(plan.acc_dtype.char))
    else:
        band = _kernels.rows(m[1], row_block())
    out, _ = _in_bands(plan, x, pad, run_jobs, threads,
                       lambda img, o, lo0, lo1, a, b: band(img, kernel, lo0, lo1, o, a, b), stacks=small)
    return out


def correlate_separable(plan, x: np.ndarray, factors: list, pad, run_jobs, threads: int):
    """The same with the finite kernel ``outer(*factors)`` (one 1-D factor per axis of
    ``plan.axes``): per output row a column pass into a row buffer, then a row pass. Returns
    ``(out, total)``; ``total`` is ``0.0``, or ``inf`` when an output is not finite: the
    caller then discards ``out`` (S9: NaN data, or a pass that overflowed). Every tap is
    multiplied, so a NaN in the data reaches every output whose window holds it."""
    order = [plan.axes.index(a) for a in sorted(plan.axes)]
    ky, kx = (np.ascontiguousarray(factors[i], dtype=plan.acc_dtype) for i in order)
    band = _kernels.separable(kx.shape[0])
    return _in_bands(plan, x, pad, run_jobs, threads,
                     lambda img, o, lo0, lo1, a, b: band(img, ky, kx, lo0, lo1, o, a, b))


def _in_bands(plan, x: np.ndarray, pad, run_jobs, threads: int, band, stacks: bool = False):
    """Run ``band(image, out_image, lo0, lo1, first_row, end_row)`` over bands of output rows
    of every image (on up to ``threads`` cores); returns the output and the sum of what the
    bands returned. ``stacks``: ``band`` also takes a stack of images (3-D, those rows of each):
    a batch then runs as groups of whole images, one call per group (:func:`_stack_jobs`)."""
    axes, moved, m, pads, padded = _layout(plan)
    if padded:
        x = pad(plan, x)
    images = np.moveaxis(x, axes, (-2, -1)) if moved else x
    (lo0, hi0), (lo1, hi1) = pads
    n0 = images.shape[-2] + lo0 + hi0 - m[0] + 1
    n1 = images.shape[-1] + lo1 + hi1 - m[1] + 1
    if not images.flags.c_contiguous:
        images = np.ascontiguousarray(images)
    shape = images.shape[:-2] + (n0, n1)
    out = output_array(shape, images.dtype)
    out = np.empty(shape, dtype=images.dtype) if out is None else out
    if images.ndim == 2 and threads <= 1:  # one image on one core: one band, no job list
        total = band(images, out, lo0, lo1, 0, n0)
        return out, (0.0 if total is None else total)
    flat_in = images.reshape((-1,) + images.shape[-2:])
    flat_out = out.reshape((-1, n0, n1))
    if stacks and flat_in.shape[0] >= 2 * threads:
        jobs = _stack_jobs(flat_in.shape[0], images.shape[-2] * images.shape[-1], threads)

        def job(index: int, g0: int, g1: int) -> None:
            totals[index] = band(flat_in[g0:g1], flat_out[g0:g1], lo0, lo1, 0, n0)
    else:
        jobs = _band_jobs(flat_in.shape[0], n0, threads, _MIN_BAND_ROWS)

        def job(index: int, img: int, a: int, b: int) -> None:
            totals[index] = band(flat_in[img], flat_out[img], lo0, lo1, a, b)

    totals = [0.0] * len(jobs)
    _run(job, [(i,) + j for i, j in enumerate(jobs)], run_jobs, threads)
    total = sum(t for t in totals if t is not None)  # inf and nan stay what they are
    return (np.moveaxis(out, (-2, -1), axes) if moved else out), total


def _band_jobs(items: int, rows: int, threads: int, min_rows: int) -> list[tuple[int, int, int]]:
    """``(item, first_row, end_row)`` jobs over ``items`` images (or volumes) of ``rows`` output
    rows (or planes) each: bands of at least ``min_rows`` rows, two per core, where there are
    fewer items than two per core; else whole items."""
    banded = 1 < threads and items < 2 * threads
    count = max(1, min(2 * threads, rows // min_rows)) if banded else 1
    return [(i, a, b) for i in range(items) for a, b in even_spans(rows, count)]


#: pixels of small images that one job of a batch on several cores takes together (one
#: compiled call): larger images are a job each, so that a core that starts late leaves no more
#: than one image's work to the others (a batch of 16 256x256 images with 7x7 was 3-5% slower
#: in groups of two)
STACK_PIXELS = 1 << 15


def _stack_jobs(items: int, pixels: int, threads: int) -> list[tuple[int, int]]:
    """``(first_image, end_image)`` groups of a batch of ``items`` images of ``pixels`` each,
    for band functions that take stacks: all of it on one core; else groups of about
    :data:`STACK_PIXELS`. Each group is one compiled call: per image, the calls' own costs
    (argument checks, two calls per image) were 10-17% of a batch of 16 128x128 float32 images
    with 3x3 to 5x5 kernels."""
    groups = 1 if threads <= 1 else min(items, -(-items * pixels // STACK_PIXELS))
    return even_spans(items, groups)


def _run(job, jobs: list, run_jobs, threads: int) -> None:
    """``job(*j)`` for every job: through ``run_jobs`` (the backend's threads) with ``threads > 1``
    and more than one job, else in order on the calling thread."""
    if threads > 1 and len(jobs) > 1:
        run_jobs(job, jobs)
    else:
        for j in jobs:
            job(*j)

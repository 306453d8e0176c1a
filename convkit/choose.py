"""How ``method="auto"`` picks an algorithm (SPEC S8, S9, S5).

``method="auto"`` is decided in two steps.

**1. In the plan, from shapes only** (trace-safe, cached with the plan). A small cost model
estimates the run time of every method the backend offers, with constants that each
backend supplies in its :class:`Capabilities` (seconds; measured on a reference machine,
re-measurable with :func:`convkit.tune.tune`). ``O`` = output elements, ``K`` = kernel taps::

    direct  c_direct * O * K  + c_out * O          (c_direct_1d for 1-D: numpy.convolve;
                                                    O at least ``direct_fill`` on GPUs; a fused
                                                    engine's loop, or a dilated call's phases,
                                                    :func:`phases_cost`, where cheaper)
    fft     c_fft * 2.5 * T * sum_a w(L_a) log2(L_a) + 3 c_out * T + fft_call
                                (+ fft_nd_call on 2+ axes; T = product of the fast FFT lengths L_a, real
                                FFTs; the kernel's transform is ~half price; w > 1 for
                                L_a > 2**14, long 1-D transforms that leave the cache)
    oa      the same over overlap-add blocks + oa_call (blocks of ~8x the kernel on long axes;
            along one axis a backend with batched block transforms gives its own cost per
            block element, ``oa_1d_out`` instead of ``4 c_out``, and per call, ``oa_1d_call``)

plus, for every method, ``c_mem`` seconds per byte it reads and writes in device memory (padded
copies, FFT buffers and passes, spectrum products, outputs; 0 on CPU backends, whose copies are
in ``c_out``; GPU constants: docs/gpu.md, "Cost model").

For float32/complex64 the direct and FFT terms are scaled by the backend's ``single_direct``
(``single_direct_1d``) and ``single_fft`` factors (the JAX backend computes float32 in about
half the time of float64; NumPy's N-d direct kernel, ``scipy.ndimage``, does not).

and picks the cheapest. Rules that override cost:

* integers and bool never go to an FFT under ``auto`` (it could not be exact, S5);
* a non-finite ``fillvalue`` keeps ``direct``;
* calls below ``small_direct`` multiply-adds go straight to ``direct`` (call overhead dominates);
* an FFT method chosen by ``auto`` marks the plan ``nan_safe``: the backend checks the data
  and runs ``direct`` when an input holds NaN or Inf, so NaN/Inf land where ``direct`` puts
  them (S9). The plain FFT path reads the DC bins of the spectra it computes anyway (no extra
  pass); other paths scan the inputs (one ``sum``, ``isfinite`` only when it is not finite).
  A transform (or separable) result that is not finite although the data are (finite values
  near the float range overflow inside an FFT) is recomputed by ``direct``: ``auto`` is never
  less finite than ``direct`` (one pass over the output; NumPy and CuPy backends). The NumPy
  backend reads the data once (``sum |x|^2``: finiteness and a bound on every intermediate
  value) and skips the output pass where the bound rules an overflow out.

**2. In the backend, with the data** (NumPy, CuPy and JAX backends). Whether a kernel is
*separable* (rank 1: an outer product of 1-D kernels, like a Gaussian or a box) depends on its
values, which the plan never sees. :func:`separable_cost` gives the cost of one 1-D pass per
axis (``c_sep * O * sum(M_a) + c_out * O * passes``); when that beats the plan's choice
(``convkit.backends._base.separable_pays``) the backend factors the kernel
(``convkit.backends._base.separable_factors``, on a host copy of the small kernel) and, if
the kernel is rank 1 to within the rounding the S5 direct bound leaves room for, and the data
are finite, runs the 1-D passes.
Otherwise the plan's method runs unchanged. The JAX backend makes the same test inside the
jitted function (the kernel may be traced) and picks the branch with a ``lax.cond``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["Capabilities", "GPU_REFERENCE", "PlatformCapabilities", "choose_method", "dft_tiles", "fast_len",
           "fused_dft_cost", "fused_direct_cost", "fused_fft_applies", "method_costs", "oa_1d_block",
           "phases_cost", "separable_cost", "tiled_dft"]

#: Published figures of an H100-class GPU (H100 SXM: HBM3, FP64/FP32 non-tensor), the one place in code
#: the GPU cost constants come from; the derivation is written down in docs/gpu.md ("Cost model").
GPU_REFERENCE = {
    "bandwidth": 3.35e12,      # bytes/s, HBM3
    "bandwidth_eff": 0.8,      # fraction of it a streaming kernel reaches
    "fp64": 34e12,             # flop/s, FP64 non-tensor
    "fp32": 67e12,             # flop/s, FP32 non-tensor
    "int32": 16.7e12,          # op/s: 132 SMs x 64 INT32 lanes x 1.98 GHz
    "l1": 33e12,               # bytes/s: 132 SMs x 128 B/clock x 1.98 GHz (loads of cached taps)
    "fft_eff": 0.5,            # fraction of FP64 peak in the butterflies (cuFFT is bandwidth-bound)
    "launch": 7e-6,            # s per kernel launch (5-10 us)
    "sms": 132,                # streaming multiprocessors
}


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do and what its primitives cost (seconds per unit, roughly).

    ``c_direct``: one multiply-add of the N-d direct method; ``c_direct_1d``: the same for
    1-D inputs (``None``: ``c_direct``); ``c_fft``: one element times ``log2`` of the length
    of one FFT; ``c_out``: touching one element once (allocation, copy, pad);
    ``c_sep``: one multiply-add of a 1-D pass of the separable path (``None``: no such path).
    """

    methods: tuple[str, ...] = ("direct", "fft", "oa")
    c_direct: float = 1.0e-9
    c_fft: float = 4.0e-9
    # below this many multiply-adds direct always wins (call overhead dominates)
    small_direct: int = 50_000
    c_direct_1d: float | None = None
    c_out: float = 0.0
    c_sep: float | None = None
    # relative cost of single precision (float32/complex64) for FFTs and the 1-D direct kernel
    # (the N-d direct kernel, ndimage, computes in float64 whatever the input)
    # fixed cost of one call of the FFT / overlap-add paths (Python, planning, allocations)
    fft_call: float = 5.0e-5
    # extra fixed seconds of an FFT call over two or more axes (the NumPy backend's real FFT
    # makes six library calls there instead of three; 0.0: none)
    fft_nd_call: float = 0.0
    oa_call: float = 1.5e-4
    # an overlap-add along ONE axis done as batched transforms of all blocks (the NumPy
    # backend's): seconds per block element beyond the transforms, and per call (None: the
    # general ``4 * c_out`` and ``oa_call``)
    oa_1d_out: float | None = None
    oa_1d_call: float | None = None
    single_fft: float = 0.55
    single_direct_1d: float = 0.6
    # the same for the N-d direct method (1.0 where it computes in float64 whatever the input)
    single_direct: float = 1.0
    # the same for the separable path's 1-D passes (1.0 where they compute in float64)
    single_sep: float = 1.0
    # per-output cost of the 1-D direct kernel in single precision (None: c_out); numpy.convolve
    # has a slow float32 path for short kernels
    c_out_1d_single: float | None = None
    # seconds per byte read or written in device memory (0.0: in c_out; GPU constants: docs/gpu.md)
    c_mem: float = 0.0
    # outputs the direct kernel needs to fill the device (one thread per output; 0: no such
    # limit); fewer outputs cost as much as this many (a GPU that is mostly idle)
    direct_fill: int = 0
    # seconds of one-core work below which a step runs on one core (waking another costs more)
    thread_min_time: float = 3.0e-4
    # a fused 2-D direct engine that reads the image once for all taps (OpenCV's filter2D on the
    # NumPy backend; "": none): seconds per multiply-add and per output (float64; float32 times
    # ``single_fused``), and the most taps it runs directly (float32, float64)
    fused_engine: str = ""
    c_fused: float = 0.0
    c_fused_out: float = 0.0
    single_fused: float = 1.0
    fused_taps: tuple[int, int] = (0, 0)
    # the most taps a direct loop beside that engine's filter runs at its costs, with stride 1 and
    # no dilation (Numba's beside OpenCV's filter2D, which switches to a DFT beyond ``fused_taps``;
    # (0, 0): no such loop),
    # and the estimated seconds from which it runs those: on smaller images the FFT methods'
    # estimates are too coarse (2-3x high) to trust a near tie
    fused_loop_taps: tuple[int, int] = (0, 0)
    fused_loop_from: float = 0.0
    # that loop's own seconds per multiply-add and per output there (float64; float32 times
    # ``single_fused``; 0.0: the filter's ``c_fused`` and ``c_fused_out``)
    c_fused_loop: float = 0.0
    c_fused_loop_out: float = 0.0
    # its separable filter (two 1-D passes in one call): seconds per multiply-add (float64)
    c_fused_sep: float = 0.0
    # a separable loop beside it (Numba's): seconds per multiply-add and per output (float64;
    # float32 times ``single_fused``; 0.0: none), run where the filter's estimate reaches
    # ``fused_sep_loop_from`` seconds (float32, float64)
    c_fused_sep_loop: float = 0.0
    c_fused_sep_loop_out: float = 0.0
    fused_sep_loop_from: tuple[float, float] = (0.0, 0.0)
    # the same engine's tiled DFT for longer kernels, one of overlap-add's implementations
    # (:func:`tiled_dft`): seconds per point of a tile's transforms there and back (float32
    # and float64 alike) and per image (0.0: none); the transform lengths a tile may have per axis
    # (fast ones of that engine, ascending; empty: one tile the image's size); seconds per tile
    # that hold the GIL; how many tiles it transforms at once
    c_fused_dft: float = 0.0
    fused_dft_call: float = 0.0
    fused_dft_lengths: tuple[int, ...] = ()
    fused_dft_tile: float = 0.0
    fused_dft_threads: int = 1
    # the same engine's whole-image DFT as the FFT method (:func:`fused_fft_applies`): the most
    # points of a transform it runs (0: none); its library calls cost no ``fft_nd_call``
    fused_fft_points: int = 0
    # a fused 1-D direct loop (Numba's on the NumPy backend; 0.0: none) for 1-D inputs with stride
    # 1 and no dilation: seconds per multiply-add and per output, on every core (float64; float32
    # times ``single_fused_1d``), and the fewest taps it runs (float32, float64)
    c_fused_1d: float = 0.0
    c_fused_1d_out: float = 0.0
    single_fused_1d: float = 1.0
    fused_1d_taps: tuple[int, int] = (0, 0)
    # a fused 3-D direct loop (Numba's on the NumPy backend; 0.0: none) for float volumes with
    # stride 1 and no dilation: seconds per multiply-add and per output, on every core (float64;
    # float32 times ``single_fused_3d``)
    c_fused_3d: float = 0.0
    c_fused_3d_out: float = 0.0
    single_fused_3d: float = 1.0
    # the 1-D direct kernel multiplies a dilated kernel's gaps too (``numpy.convolve``)
    direct_1d_gaps: bool = False
    # the direct method runs a dilated call on its input's phases (:func:`phases_cost`: one
    # undilated call on a mosaic of them), 1-D from this dilation on (0: never), at this many
    # seconds per call beyond the engine's own (1-D; N-d, which pads, splits and merges:
    # ``phases_nd_call`` and the copies at ``c_out / 2`` per element); a 1-D signal's phase
    # image has rows of ``d`` samples, and below ``phases_1d_row`` of them each output costs
    # ``phases_1d_row / d`` times as much (the engines vectorize along the rows)
    phases_1d_from: int = 0
    phases_call: float = 5.0e-5
    phases_nd_call: float = 1.0e-4
    phases_1d_row: int = 1
    # fixed seconds of a call that the backend hands to another backend's engines on the same
    # memory and takes back as one of its own arrays (the JAX backend's CPU handoff: its
    # dispatch, adopting the result); None: the backend's default
    handoff_call: float | None = None

    @classmethod
    def from_gpu_figures(cls, figures: dict | None = None, *, direct_int_ops: float = 16.0,
                         launches_fft: int = 8, launches_oa: int = 24, **overrides) -> Capabilities:
        """Constants derived from a GPU's published figures (default :data:`GPU_REFERENCE`; the
        derivation: docs/gpu.md, "Cost model"). ``direct_int_ops``: integer operations per tap of
        the direct kernel (index arithmetic, boundary tests); ``launches_*``: kernel launches per
        call of the FFT / overlap-add paths. ``overrides`` replace any derived constant."""
        g = {**GPU_REFERENCE, **(figures or {})}
        c_mem = 1.0 / (g["bandwidth"] * g["bandwidth_eff"])
        # one tap: integer index work, one cached 8-byte load, one FMA (2 flops) in float64
        c_direct = direct_int_ops / g["int32"] + 8.0 / g["l1"] + 2.0 / g["fp64"]
        c_direct32 = direct_int_ops / g["int32"] + 4.0 / g["l1"] + 2.0 / g["fp32"]
        values = dict(
            methods=("direct", "fft"),
            c_direct=c_direct, c_direct_1d=None, single_direct=c_direct32 / c_direct,
            single_direct_1d=c_direct32 / c_direct,
            c_fft=1.0 / (g["fp64"] * g["fft_eff"]), single_fft=g["fp64"] / g["fp32"],
            c_out=0.0, c_mem=c_mem, c_sep=c_direct,
            fft_call=launches_fft * g["launch"], oa_call=launches_oa * g["launch"],
            # resident threads of the whole GPU at half occupancy: 132 SMs x 1024
            direct_fill=g["sms"] * 1024,
            # below two launches' worth of direct work, direct always wins
            small_direct=int(2 * g["launch"] / c_direct),
        )
        values.update(overrides)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


class PlatformCapabilities:
    """A backend's ``capabilities`` per platform (a descriptor on the backend class).

    Read on an instance it returns the constants of the platform the backend's
    ``cost_platform()`` names (``"cpu"``, ``"gpu"``, ...), else the default ones; read on the
    class it returns the default ones. Assigning on an instance (``convkit.tune.apply``) replaces
    the constants of the current platform only; :meth:`set` names the platform. Plans are cached
    on the constants, so a plan made for one platform is never reused for another.
    """

    def __init__(self, default: Capabilities, **platforms: Capabilities) -> None:
        self.default = default
        self.platforms = platforms
        self.attr = "_capabilities"

    def __set_name__(self, owner, name: str) -> None:
        self.attr = f"_{name}_by_platform"

    def _platform(self, obj) -> str:
        fn = getattr(obj, "cost_platform", None)
        return fn() if fn is not None else "cpu"

    def get(self, obj, platform: str) -> Capabilities:
        """The constants ``obj`` uses on ``platform``."""
        override = obj.__dict__.get(self.attr, {}).get(platform)
        if override is not None:
            return override
        return self.platforms.get(platform, self.default)

    def set(self, obj, platform: str, caps: Capabilities) -> None:
        obj.__dict__.setdefault(self.attr, {})[platform] = caps

    def __get__(self, obj, owner=None):
        if obj is None:
            return self.default
        return self.get(obj, self._platform(obj))

    def __set__(self, obj, caps: Capabilities) -> None:
        self.set(obj, self._platform(obj), caps)


def fast_len(n: int) -> int:
    """Smallest 2**a * 3**b * 5**c >= n (an FFT length every FFT library handles fast)."""
    if n <= 6:
        return max(n, 1)
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _geometry(x_shape, k_shape, axes, pads, dilation):
    """(batch, per-axis padded lengths, per-axis effective kernel lengths)."""
    batch = 1
    for a in range(len(x_shape)):
        if a not in axes:
            batch *= max(x_shape[a], k_shape[a])
    ns, ms = [], []
    for i, a in enumerate(axes):
        ms.append((k_shape[a] - 1) * dilation[i] + 1)
        ns.append(x_shape[a] + max(pads[i][0], 0) + max(pads[i][1], 0))
    return batch, ns, ms


def _log_work(lengths) -> float:
    """Sum over the transform axes of ``log2(L)``, weighted up for long 1-D transforms that
    leave the cache (a 1-D FFT of 10**6 points costs far more per point than 1000 of 1000)."""
    return sum(math.log2(max(n, 2)) * (1.0 + 0.25 * max(0.0, math.log2(max(n, 2)) - 14.0))
               for n in lengths)


def fft_lengths(ns, ms, pads) -> list[int]:
    """Transform lengths of the plain FFT method: the valid correlation of the padded input
    (lengths ``ns``) with the kernel (``ms``) needs a circular period of only the padded length;
    with the zero fill read from the transform's own zeros, the shorter pad is not even stored
    (``fft_corr`` in ``convkit/backends/_base.py``: ``n + max(lo, hi)`` for an input of ``n``)."""
    return [fast_len(max(n - min(max(lo, 0), max(hi, 0)), m)) for n, m, (lo, hi) in zip(ns, ms, pads)]


def _fft_cost(batch, ns, ms, caps: Capabilities, pads=None) -> float:
    lengths = fft_lengths(ns, ms, pads or [(0, 0)] * len(ns))
    t = batch * math.prod(lengths)
    return caps.c_fft * 2.5 * t * _log_work(lengths) + 3 * caps.c_out * t


def oa_1d_block(m: int) -> int:
    """FFT length of one block of a batched one-axis overlap-add with a kernel of ``m`` taps: the
    power of two at least ``8 m`` and 64 (pocketfft's fastest lengths; 10-25% faster than the
    nearest 5-smooth length for kernels of 33-1000 taps, measured at 1e5 samples)."""
    return 1 << (max(8 * m, 64) - 1).bit_length()


def _batched_oa(ns, caps: Capabilities) -> bool:
    """Whether the backend runs this overlap-add as batched one-axis blocks (``oa_1d_*`` costs)."""
    return len(ns) == 1 and caps.oa_1d_out is not None


def _oa_cost(batch, ns, ms, caps: Capabilities) -> float:
    """Overlap-add with blocks of about 8x the kernel on axes where the input is much longer
    (one axis with ``caps.oa_1d_out``: the batched blocks of :func:`oa_1d_block`)."""
    one_axis = _batched_oa(ns, caps)
    per_element = caps.oa_1d_out if one_axis else 4 * caps.c_out
    total, blocks = batch, []
    for n, m in zip(ns, ms):
        if n > 8 * m and m > 1:
            f = oa_1d_block(m) if one_axis else fast_len(max(8 * m, 64))
            step = f - m + 1
            total *= math.ceil(n / step) * f
        else:
            f = fast_len(n + m - 1)
            total *= f
        blocks.append(f)
    return caps.c_fft * 2.5 * total * _log_work(blocks) + per_element * total


def _itemsize(dtype) -> int:
    return 8 if dtype is None else max(np.dtype(dtype).itemsize, 1)


def _fft_traffic(batch, ns, ms, outputs, itemsize, blocks=False, pads=None) -> float:
    """Bytes the FFT path (overlap-add: ``blocks``) moves: padded copies of both inputs, one
    read+write of the spectrum per transform axis for 2.5 transforms, the spectrum product
    (overlap-add: and the block sums), the cropped output. A spectrum of T real points takes
    T*itemsize bytes (T/2 complex of twice the size); complex inputs likewise."""
    if not blocks:
        total = batch * math.prod(fft_lengths(ns, ms, pads or [(0, 0)] * len(ns)))
        return itemsize * (total * (5 + 5 * len(ns)) + outputs)
    total = batch
    for n, m in zip(ns, ms):
        if n > 8 * m and m > 1:
            f = fast_len(max(8 * m, 64))
            total *= math.ceil(n / (f - m + 1)) * f
        else:
            total *= fast_len(n + m - 1)
    return itemsize * (total * (2 + 5 * len(ns) + (4 if blocks else 3)) + outputs)


def _fused_work(x_shape, k_shape, axes, pads, dilation, caps: Capabilities, dtype):
    """``(float32?, taps of the dilated kernel, outputs computed, seconds of padding)`` of the
    fused 2-D engine, or ``None`` where it does not apply (not two axes of float32/float64, a
    kernel with batch axes). It computes the image's own size, or all of the padded image
    (then cropped) when the output does not have the input's size, after a copy that pads
    it (none for a valid call); strided outputs are sliced from it."""
    if not caps.fused_engine or len(axes) != 2 or dtype is None:
        return None
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64) or any(m != 1 for a, m in enumerate(k_shape) if a not in axes):
        return None
    batch, ns, ms = _geometry(x_shape, k_shape, axes, pads, dilation)
    same = all(lo + hi == m - 1 and 0 <= lo for (lo, hi), m in zip(pads, ms))
    outputs = batch * math.prod(n - (m - 1 if same else 0) for n, m in zip(ns, ms))
    padless = all(lo == hi == 0 for lo, hi in pads)  # a valid call: the engines read the input as it is
    copy = 0.0 if same or padless else caps.c_out * batch * math.prod(ns)
    return dt == np.float32, math.prod(ms), outputs, copy


def fused_direct_cost(*, x_shape, k_shape, axes, pads, dilation, caps: Capabilities, dtype=None,
                      stride=None) -> float:
    """Estimated seconds of the fused 2-D engine's direct loop (``inf`` where it does not
    apply, or the dilated kernel has more taps than ``caps.fused_taps``, unless a loop beside
    the engine runs it: up to ``caps.fused_loop_taps`` taps, with stride 1 and no dilation,
    from ``caps.fused_loop_from`` seconds; ``stride``: ``None`` counts as 1). The zeros a
    dilation inserts are skipped."""
    work = _fused_work(x_shape, k_shape, axes, pads, dilation, caps, dtype)
    if work is None:
        return math.inf
    single, dilated, outputs, copy = work
    filtered = dilated <= caps.fused_taps[0 if single else 1]
    plain = all(d == 1 for d in dilation) and all(s == 1 for s in (stride or ()))
    if not filtered and not (plain and dilated <= caps.fused_loop_taps[0 if single else 1]):
        return math.inf
    taps = math.prod(k_shape[a] for a in axes)
    scale = caps.single_fused if single else 1.0
    per_tap, per_out = caps.c_fused, caps.c_fused_out
    if not filtered and caps.c_fused_loop:
        per_tap, per_out = caps.c_fused_loop, caps.c_fused_loop_out
    seconds = scale * (per_tap * taps + per_out) * outputs + copy
    return seconds if filtered or seconds >= caps.fused_loop_from else math.inf


@functools.lru_cache(maxsize=256)
def dft_tiles(image: tuple[int, ...], kernel: tuple[int, ...],
              caps: Capabilities) -> tuple[tuple[int, ...], bool]:
    """``(lengths, threaded)`` of a tiled-DFT correlation (the fused engine's) of an output of
    ``image`` points per axis with a kernel of ``kernel`` taps: per axis, the transform length of
    square tiles (but on an axis that one tile covers), of ``caps.fused_dft_lengths``, whose
    :func:`tiled_dft` estimate is the least (ties: the shorter lengths); and whether the tiles
    run on several threads (where that estimate, plus half of ``caps.thread_min_time`` to wake
    them, is below one core's). A tile of length ``L`` gives ``L - M + 1`` outputs. Shapes
    only, and ``caps.fused_dft_threads`` rather than the cores: the tiles, and so the bits, are
    the same on any machine (S8). Where no length is long enough (or none is given): one tile
    of the :func:`fast_len` of ``n + M - 1``."""
    covers = []  # per axis, the length of one tile that covers it
    for n, m in zip(image, kernel):
        whole = fast_len(n + m - 1)
        covers.append(min([length for length in caps.fused_dft_lengths if length >= whole] or [whole]))
    # square tiles (an axis that one tile covers keeps that tile's length): wide or tall tiles
    # of the same points measured slower, up to 1.9x
    least = max(kernel)
    sides = [length for length in caps.fused_dft_lengths if least <= length < max(covers)] + [max(covers)]
    lengths = np.array([[min(side, cover) for cover in covers] for side in sides], dtype=np.float64)
    outputs = lengths - np.array(kernel, dtype=np.float64) + 1
    count = np.prod(np.ceil(np.array(image, dtype=np.float64) / np.maximum(outputs, 1)), axis=1)
    points = np.prod(lengths, axis=1)
    one = _tiled_seconds(points, count, 1, caps)
    many = _tiled_seconds(points, count, caps.fused_dft_threads, caps)
    threaded = many < one
    seconds = np.where(threaded, many, one)
    best = int(np.argmin(seconds))
    return tuple(int(length) for length in lengths[best]), bool(threaded[best])


def _tiled_terms(points, tiles, threads: int, caps: Capabilities):
    """``(work, fixed)`` of ``tiles`` tiles of ``points`` transform points each, ``threads`` at a
    time, whose estimate is ``caps.c_fused_dft * work + fixed`` seconds: the kernel's transform
    counts half a tile, then one tile per round; each tile's Python steps hold the GIL
    (``caps.fused_dft_tile``), and waking more threads costs half of ``caps.thread_min_time``
    (so they pay from that long on one core)."""
    work = points * (0.5 + np.ceil(tiles / max(threads, 1)))
    return work, caps.fused_dft_tile * tiles + (caps.thread_min_time / 2 if threads > 1 else 0.0)


def _tiled_seconds(points, tiles, threads: int, caps: Capabilities):
    """Seconds of :func:`_tiled_terms`."""
    work, fixed = _tiled_terms(points, tiles, threads, caps)
    return caps.c_fused_dft * work + fixed


class TiledDFT(NamedTuple):
    """One image's tiled-DFT correlation as :func:`tiled_dft` plans it."""

    lengths: tuple[int, ...]  # the tiles' transform lengths, per axis
    threaded: bool            # whether the tiles run on several threads
    work: float               # transform points, each tile's and half the kernel's, per round
    fixed: float              # seconds beside ``c_fused_dft * work``: per tile, waking threads


def tiled_dft(image: tuple[int, ...], kernel: tuple[int, ...], caps: Capabilities) -> TiledDFT:
    """One image's tiled-DFT correlation (the fused engine's) in tiles of the :func:`dft_tiles`
    lengths, and its estimate, ``caps.c_fused_dft * work + fixed`` seconds: each tile transformed
    there and back with the steps around it (a padded copy in, the product of the spectra, the
    outputs out: their time per point hardly depends on the length among those the engine
    offers), ``caps.fused_dft_threads`` tiles at a time where that pays, plus
    ``caps.fused_dft_tile`` per tile (:func:`_tiled_terms`)."""
    image, kernel = tuple(image), tuple(kernel)
    lengths, threaded = dft_tiles(image, kernel, caps)
    tiles = math.prod(-(-n // (length - m + 1)) for n, m, length in zip(image, kernel, lengths))
    work, fixed = _tiled_terms(math.prod(lengths), tiles, caps.fused_dft_threads if threaded else 1, caps)
    return TiledDFT(lengths, threaded, float(work), float(fixed))


def fused_dft_cost(*, x_shape, k_shape, axes, pads, dilation, caps: Capabilities, dtype=None) -> float:
    """Estimated seconds of the fused engine's tiled DFT (``inf`` where it does not apply, or the
    kernel is short enough for its direct loop, or one tile would cover the image where the
    engine's whole-image DFT is the FFT method): the valid part of the padded image, in tiles
    (:func:`tiled_dft`), float32 at float64's cost (measured 0.85-0.9 of it)."""
    work = _fused_work(x_shape, k_shape, axes, pads, dilation, caps, dtype)
    if work is None or not caps.c_fused_dft or work[1] <= caps.fused_taps[0 if work[0] else 1]:
        return math.inf
    batch, ns, ms = _geometry(x_shape, k_shape, axes, pads, dilation)
    image = tuple(max(n - m + 1, 1) for n, m in zip(ns, ms))
    tiled = tiled_dft(image, ms, caps)
    one_tile = all(length - m + 1 >= n for n, m, length in zip(image, ms, tiled.lengths))
    if one_tile and fused_fft_applies(x_shape=x_shape, k_shape=k_shape, axes=axes, pads=pads,
                                      dilation=dilation, caps=caps, dtype=dtype):
        return math.inf  # the whole-image DFT of the FFT method, with fewer steps
    return batch * (caps.c_fused_dft * tiled.work + tiled.fixed + caps.fused_dft_call) + work[3]


def fused_fft_applies(*, x_shape, k_shape, axes, pads, dilation, caps: Capabilities, dtype=None) -> bool:
    """Whether the FFT method runs on the fused engine's DFT (OpenCV's ``cv2.dft``): one real
    float32/float64 image (two axes, no batch) whose transforms (:func:`fft_lengths`) have at
    most ``caps.fused_fft_points`` points."""
    if not caps.fused_fft_points or len(axes) != 2 or len(x_shape) != 2 or dtype is None:
        return False
    if np.dtype(dtype) not in (np.float32, np.float64):
        return False
    _, ns, ms = _geometry(x_shape, k_shape, axes, pads, dilation)
    return math.prod(fft_lengths(ns, ms, pads)) <= caps.fused_fft_points


def fused_1d_cost(*, out_shape, x_shape, k_shape, dilation, stride, caps: Capabilities, dtype=None) -> float:
    """Estimated seconds of the fused 1-D direct loop (``inf`` where it does not apply: not a
    1-D float32/float64 input, a stride or a dilation, fewer taps than ``caps.fused_1d_taps``)."""
    if not caps.c_fused_1d or len(x_shape) != 1 or dtype is None or tuple(dilation) != (1,):
        return math.inf
    if stride is not None and tuple(stride) != (1,):
        return math.inf
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64) or k_shape[0] < caps.fused_1d_taps[0 if dt == np.float32 else 1]:
        return math.inf
    scale = caps.single_fused_1d if dt == np.float32 else 1.0
    return scale * (caps.c_fused_1d * k_shape[0] + caps.c_fused_1d_out) * out_shape[0]


def fused_3d_cost(*, out_shape, x_shape, k_shape, axes, dilation, stride, caps: Capabilities,
                  dtype=None) -> float:
    """Estimated seconds of the fused 3-D direct loop (``inf`` where it does not apply: not three
    axes of float32/float64 with the kernel of size 1 on the others, a stride or a dilation)."""
    if not caps.c_fused_3d or len(axes) != 3 or dtype is None or any(d != 1 for d in dilation):
        return math.inf
    if stride is not None and any(s != 1 for s in stride):
        return math.inf
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64) or any(m != 1 for a, m in enumerate(k_shape) if a not in axes):
        return math.inf
    taps = math.prod(k_shape[a] for a in axes)
    scale = caps.single_fused_3d if dt == np.float32 else 1.0
    return scale * (caps.c_fused_3d * taps + caps.c_fused_3d_out) * math.prod(out_shape)


def _direct_cost(*, out_shape, x_shape, k_shape, axes, pads, dilation, caps: Capabilities, dtype,
                 stride) -> float:
    """The direct method's estimate in :func:`method_costs`: the generic kernel's (with
    ``caps.direct_1d_gaps``, a 1-D one multiplies a dilated kernel's gaps too), or a fused
    engine's, or the input's phases' (:func:`phases_cost`), whichever is cheapest."""
    outputs = math.prod(out_shape)
    taps = math.prod(k_shape[a] for a in axes)
    single = dtype is not None and np.dtype(dtype) in (np.float32, np.complex64)
    one_d = len(axes) == 1 and len(x_shape) == 1 and caps.c_direct_1d
    if one_d:
        c_dir = caps.c_direct_1d * (caps.single_direct_1d if single else 1.0)
        if caps.direct_1d_gaps:
            taps = (taps - 1) * dilation[0] + 1 if taps else 0
    else:
        c_dir = caps.c_direct * (caps.single_direct if single else 1.0)
    c_out = caps.c_out_1d_single if (one_d and single and caps.c_out_1d_single is not None) else caps.c_out
    cost = c_dir * max(outputs, caps.direct_fill) * taps + c_out * outputs
    fused = dict(x_shape=x_shape, k_shape=k_shape, axes=axes, pads=pads, dilation=dilation, caps=caps,
                 dtype=dtype)
    if caps.fused_engine:
        cost = min(cost, fused_direct_cost(**fused, stride=stride))
    if one_d and caps.c_fused_1d:
        cost = min(cost, fused_1d_cost(out_shape=out_shape, x_shape=x_shape, k_shape=k_shape,
                                       dilation=dilation, stride=stride, caps=caps, dtype=dtype))
    if len(axes) == 3 and caps.c_fused_3d:
        cost = min(cost, fused_3d_cost(out_shape=out_shape, x_shape=x_shape, k_shape=k_shape, axes=axes,
                                       dilation=dilation, stride=stride, caps=caps, dtype=dtype))
    if caps.phases_1d_from:
        cost = min(cost, phases_cost(**fused))
    return cost


def phases_cost(*, x_shape, k_shape, axes, pads, dilation, caps: Capabilities, dtype=None) -> float:
    """Estimated seconds of a dilated direct call run on its input's phases
    (``convkit/backends/polyphase.py``): one undilated valid call on a mosaic of the phases, the
    size of the input padded to whole periods of the dilation, then the kept outputs
    interleaved back; plus ``caps.phases_nd_call``, and a copy of the input and of the output at
    half of ``c_out`` per element (transposing copies, which cost about the same in float32
    and float64). A 1-D signal's phases are the columns of a ``(blocks, d)`` image (no
    copies), run with an ``(M, 1)`` kernel, at ``phases_1d_row / d`` times the engine's
    estimate where its rows are that short, plus ``caps.phases_call``.

    ``inf`` where the backend does not run the phases: no ``caps.phases_1d_from``, no
    dilation, a kernel with batch axes, N-d data not float32/float64; 1-D, a dilation below
    ``caps.phases_1d_from``, or one where the gaps ``numpy.convolve`` would multiply cost
    less than ``caps.phases_call``."""
    if not caps.phases_1d_from or all(d == 1 for d in dilation) or dtype is None:
        return math.inf
    if any(m != 1 for a, m in enumerate(k_shape) if a not in axes):
        return math.inf
    dt = np.dtype(dtype)
    mosaic = list(x_shape)
    for (lo, hi), d, a in zip(pads, dilation, axes):
        n = x_shape[a] + lo + hi
        mosaic[a] = n + (-n % d)

    def valid(image, kernel, axes_sub):
        """(seconds, outputs) of the undilated valid call on ``image`` (inf where it has none)."""
        out = tuple(n - kernel[a] + 1 if a in axes_sub else n for a, n in enumerate(image))
        if min(out, default=1) <= 0:
            return math.inf, 0
        return _direct_cost(out_shape=out, x_shape=image, k_shape=kernel, axes=axes_sub,
                            pads=((0, 0),) * len(axes_sub), dilation=(1,) * len(axes_sub), caps=caps,
                            dtype=dtype, stride=None), math.prod(out)

    if len(x_shape) == 1:
        (d,), (m,) = dilation, k_shape
        gaps = (m - 1) * (d - 1) * (mosaic[0] - (m - 1) * d)  # products of zeros, over the outputs
        if d < caps.phases_1d_from or (caps.c_direct_1d or caps.c_direct) * gaps <= caps.phases_call:
            return math.inf
        engine, _ = valid((mosaic[0] // d, d), (m, 1), (0, 1))
        return engine * max(caps.phases_1d_row / d, 1.0) + caps.phases_call
    if dt not in (np.float32, np.float64):
        return math.inf
    engine, outputs = valid(tuple(mosaic), tuple(k_shape), tuple(axes))
    return engine + caps.phases_nd_call + caps.c_out / 2 * (math.prod(mosaic) + outputs)


def method_costs(*, out_shape, x_shape, k_shape, axes, pads, dilation,
                 caps: Capabilities, dtype=None, stride=None) -> dict[str, float]:
    """Estimated seconds of every method in ``caps.methods`` for one call (shapes only;
    ``stride``: ``None`` counts as 1 on every axis)."""
    outputs = math.prod(out_shape)
    single = dtype is not None and np.dtype(dtype) in (np.float32, np.complex64)
    costs = {"direct": _direct_cost(out_shape=out_shape, x_shape=x_shape, k_shape=k_shape, axes=axes,
                                    pads=pads, dilation=dilation, caps=caps, dtype=dtype, stride=stride)}
    fused = dict(x_shape=x_shape, k_shape=k_shape, axes=axes, pads=pads, dilation=dilation, caps=caps,
                 dtype=dtype)
    batch, ns, ms = _geometry(x_shape, k_shape, axes, pads, dilation)
    f = caps.single_fft if single else 1.0
    if "fft" in caps.methods:
        costs["fft"] = f * _fft_cost(batch, ns, ms, caps, pads) + caps.fft_call
        if len(ns) > 1 and not fused_fft_applies(**fused):
            costs["fft"] += caps.fft_nd_call
        elif len(ns) > 1 and caps.fused_engine and caps.c_fused_dft:
            # the engine's whole-image DFT: the steps of one of its tiles (the period's), at their rate
            period, _ = _tiled_terms(math.prod(fft_lengths(ns, ms, pads)), 1, 1, caps)
            whole = caps.c_fused_dft * period + caps.fused_dft_call
            costs["fft"] = min(costs["fft"], whole)
    if "oa" in caps.methods:
        call = caps.oa_1d_call if _batched_oa(ns, caps) and caps.oa_1d_call is not None else caps.oa_call
        costs["oa"] = f * _oa_cost(batch, ns, ms, caps) + call
        if caps.c_fused_dft:
            costs["oa"] = min(costs["oa"], fused_dft_cost(**fused))
    if caps.c_mem:  # memory traffic (device backends; 0.0 leaves the estimates above unchanged)
        size = _itemsize(dtype)
        costs["direct"] += caps.c_mem * size * (batch * math.prod(ns) + outputs)
        if "fft" in costs:
            costs["fft"] += caps.c_mem * _fft_traffic(batch, ns, ms, outputs, size, pads=pads)
        if "oa" in costs:
            costs["oa"] += caps.c_mem * _fft_traffic(batch, ns, ms, outputs, size, blocks=True)
    return costs


def separable_cost(*, out_shape, x_shape, k_shape, axes, caps: Capabilities, dtype=None) -> float:
    """Estimated seconds of the separable path (one 1-D pass per kernel axis longer than 1; the
    fused engine's two-pass filter where it applies: two float32/float64 axes)."""
    if caps.c_sep is None:
        return math.inf
    sizes = [k_shape[a] for a in axes if k_shape[a] > 1]
    if len(sizes) < 2:
        return math.inf
    # intermediate passes run over the larger (input-sized) arrays: bound by the bigger of the two
    elems = max(math.prod(out_shape), math.prod(max(x_shape[a], out_shape[a]) for a in range(len(x_shape))))
    # c_mem: each pass reads and writes its (float64) array once
    passes = (caps.c_sep * elems * sum(sizes) + caps.c_out * elems * 2 * len(sizes)
              + caps.c_mem * 8 * elems * 2 * len(sizes))
    dt = None if dtype is None else np.dtype(dtype)
    if dt == np.float32:
        passes *= caps.single_sep
    if caps.fused_engine and caps.c_fused_sep and len(axes) == 2 and dt in (np.float32, np.float64):
        scale = caps.single_fused if dt == np.float32 else 1.0
        fused = scale * (caps.c_fused_sep * sum(sizes) + caps.c_fused_out) * elems
        if caps.c_fused_sep_loop and fused >= caps.fused_sep_loop_from[0 if dt == np.float32 else 1]:
            loop = scale * (caps.c_fused_sep_loop * sum(sizes) + caps.c_fused_sep_loop_out) * elems
            fused = min(fused, loop)
        return min(passes, fused)
    return passes


def choose_method(
    method: str,
    *,
    out_dtype: np.dtype,
    out_shape,
    x_shape,
    k_shape,
    axes,
    pads,
    stride,
    dilation,
    fill_finite: bool,
    caps: Capabilities,
) -> tuple[str, bool]:
    """Return ``(method, nan_safe)`` for a plan; explicit methods pass through unchanged."""
    if method != "auto":
        if method not in caps.methods:
            # a backend without its own overlap-add runs the plain FFT path (same numbers)
            return ("fft" if method == "oa" and "fft" in caps.methods else "direct"), False
        return method, False
    if out_dtype.kind in "biu" or not fill_finite:
        return "direct", False
    taps = math.prod(k_shape[a] for a in axes)
    outputs = math.prod(out_shape)
    if outputs * taps <= caps.small_direct or "fft" not in caps.methods:
        return "direct", False
    costs = method_costs(out_shape=out_shape, x_shape=x_shape, k_shape=k_shape, axes=axes, pads=pads,
                         dilation=dilation, caps=caps, dtype=out_dtype, stride=stride)
    best = min(costs, key=costs.get)
    return best, best != "direct"

"""OpenCV's fused 2-D filter (``cv2.filter2D``) as a host engine of the NumPy backend.

``scipy.ndimage.correlate`` makes one pass over the image per kernel tap and accumulates
in float64; ``cv2.filter2D`` reads each row once for all taps in SIMD registers, in the
input's own precision: 8-15x faster on a 2000x2000 float32 image with a 3x3 kernel
(docs/performance.md has the numbers). It is optional (``pip install
"pyconvkit[opencv]"``); without it the NumPy backend runs exactly as before.

What it is used for, and why it computes S1's products:

* float32 and float64 only (OpenCV saturates integers; it has no complex type);
* two convolution axes, the kernel of size 1 on every other axis (a batch of images is
  one call per image). OpenCV threads an image of :data:`OWN_THREADS_FROM` pixels or more
  itself; below, calls the cost model finds long enough run on the backend's threads, as
  groups of images or bands of rows (:func:`_run_images`);
* kernels of at most :data:`MAX_TAPS` taps after dilation: from 130 taps (float32) and 50
  (float64) ``filter2D`` switches to a DFT, which would spread a NaN over the whole image
  (beyond, :func:`tiled_correlate` runs ``auto``'s overlap-add on ``cv2.dft`` in tiles, on data
  ``auto`` has found finite);
* taps that are finite and larger than DBL_EPSILON in magnitude, as for ``scipy.ndimage``:
  ``filter2D`` drops zero taps (so a NaN would not propagate through one, S9). The zeros
  that a dilation inserts are not taps (S1): dropping them is exactly right.

Each output is a sum of the same products in an order that depends on the kernel and the
image width only, so the bits do not depend on the number of threads (S8). The sum runs
in the input's precision, within the S5 direct bound ``gamma_K``.

The boundary rules map to OpenCV's border modes when the output has the input's size:
zero fill to ``BORDER_CONSTANT``, ``symmetric`` to ``BORDER_REFLECT``, ``reflect`` to
``BORDER_REFLECT_101``, ``edge`` to ``BORDER_REPLICATE``; any other geometry (a non-zero
fill value, ``wrap``, ``full`` or ``valid`` outputs, a kernel longer than the image under a
reflecting rule) pads the image first (:meth:`ArrayBackend.pad`) and keeps the valid part.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from typing import Any

import numpy as np

from convkit.choose import fast_len

from ._base import even_spans, output_array, switched_off

__all__ = ["NAME", "MAX_TAPS", "installed", "available", "version", "applies", "correlate",
           "correlate_separable", "dft_linear_conv", "sum_squares", "abs_sum", "total", "tiled_correlate",
           "TILE_LENGTHS"]

NAME = "opencv"

#: most taps (of the dilated kernel) that ``cv2.filter2D`` runs directly; from one more it
#: runs a DFT (OpenCV's ``dftFilter2D``: 130 taps for float32, 50 for float64)
MAX_TAPS = {np.dtype(np.float32): 129, np.dtype(np.float64): 49}

#: pixels per image from which OpenCV runs a filter on several cores itself: 2**20 (measured with
#: filter2D and sepFilter2D, float32 and float64: one core on 1023x1023, 1024x1023 and 512x2047,
#: both on 1024x1024, 512x2048 and 256x4096); below it convkit's threads may filter bands of rows
#: or groups of images concurrently
OWN_THREADS_FROM = 1 << 20
#: the cost model's estimate of OpenCV's time for a whole call (seconds, one core) from which
#: convkit's threads run groups of images (below, waking the second core costs more than it
#: saves), and from which they run bands of rows of fewer images than cores: a band costs a
#: filter call of its own and the rows around each cut are filtered twice, so on the 2-core VM
#: two bands were slower than one call on a 500x500 float32 image with a 3x3 kernel (0.12 ms)
#: and no faster with 5x5 (0.3 ms), and faster from about 1 ms (900x900 with 7x7: 1.2-1.7 ms
#: against 1.8-1.9 ms)
THREADED_FROM = 2e-4
BANDS_FROM = 1e-3

_BORDERS = {"symmetric": "BORDER_REFLECT", "reflect": "BORDER_REFLECT_101", "edge": "BORDER_REPLICATE"}

#: set CONVKIT_OPENCV=0 to keep OpenCV out even where it is installed
_ENV = "CONVKIT_OPENCV"

_cv2: Any = None
_state: tuple[bool, str] | None = None


def installed() -> bool:
    """Whether ``cv2`` can be found (no import: cheap enough for every backend start)."""
    return not switched_off(_ENV) and importlib.util.find_spec("cv2") is not None


def reason_missing() -> str | None:
    """Why :func:`installed` is False: ``CONVKIT_OPENCV=0``, or ``None`` (not installed)."""
    return f"{_ENV}=0" if switched_off(_ENV) else None


def available() -> tuple[bool, str]:
    """``(True, "")`` once ``cv2`` imports, else ``(False, why)``; imported on the first ask."""
    global _cv2, _state
    if _state is None:
        if switched_off(_ENV):
            _state = (False, f"{_ENV}=0")
        else:
            try:
                import cv2
            except Exception as exc:  # not installed, or a broken wheel: the engine is left out
                _state = (False, f"cv2 does not import ({type(exc).__name__}: {exc})".strip())
            else:
                _cv2, _state = cv2, (True, "")
    return _state


def version() -> str:
    """OpenCV's version, or ``""`` when it is not available."""
    return str(_cv2.__version__) if available()[0] else ""


def applies(plan, path: str = "direct") -> bool:
    """Whether the engine computes this plan by ``path``: ``"direct"`` (its direct loop, up
    to :data:`MAX_TAPS` taps), ``"dft"`` (its tiled DFT, beyond) or ``"separable"`` (two 1-D
    passes); shapes and dtypes only (the backend's ``taps_ok`` checks the direct loop's kernel)."""
    if plan.acc_dtype not in MAX_TAPS or len(plan.axes) != 2:
        return False
    if any(plan.k_shape[a] != 1 for a in range(plan.ndim) if a not in plan.axes):
        return False
    if path == "separable":
        return True
    return (math.prod(plan.effective_kernel) <= MAX_TAPS[plan.acc_dtype]) == (path == "direct")


@functools.lru_cache(maxsize=512)
def _layout(plan) -> tuple:
    """Everything about how a plan runs that depends on the plan alone (cached): the two axes
    in order, whether they must be moved last, the filter's extent, OpenCV's border (None:
    pad first), the anchor, and the strides."""
    axes = tuple(sorted(plan.axes))
    order = [plan.axes.index(a) for a in axes]
    me = tuple(plan.effective_kernel[i] for i in order)
    pads = [plan.pads[i] for i in order]
    n = [plan.x_shape[a] for a in axes]
    border = None
    if all(lo + hi == m - 1 and 0 <= lo <= m - 1 for (lo, hi), m in zip(pads, me)):
        if plan.boundary == "constant" and plan.fillvalue == 0:
            border = _cv2.BORDER_CONSTANT
        elif plan.boundary in _BORDERS and all(m <= k for m, k in zip(me, n)):
            border = getattr(_cv2, _BORDERS[plan.boundary])
    anchor = (pads[1][0], pads[0][0]) if border is not None else (0, 0)
    moved = axes != (plan.ndim - 2, plan.ndim - 1)
    stride = tuple(plan.stride[i] for i in order)
    return axes, moved, me, border, anchor, stride


def _readable(image: np.ndarray) -> np.ndarray:
    """``image`` itself when OpenCV can read it in place (contiguous rows, rows in order)."""
    s0, s1 = image.strides
    if s1 == image.itemsize and s0 >= image.shape[1] * s1:
        return image
    return np.ascontiguousarray(image)


def correlate(plan, x: np.ndarray, w: np.ndarray, pad, run_jobs=None, threads: int = 1) -> np.ndarray:
    """``VALIDCORR(pad(x), dilate(w))[::stride]`` for a plan that :func:`applies`, through
    ``cv2.filter2D``. ``w`` is the canonical (already dilated) kernel; ``pad(x)`` is the
    backend's padding (used only where OpenCV has no matching border). With ``threads > 1``,
    ``run_jobs(func, jobs)`` (the backend's thread pool) runs bands of rows or groups of
    images concurrently (:func:`_filter`)."""
    _, _, me, border, anchor, stride = _layout(plan)
    kernel = np.ascontiguousarray(w.reshape(me))
    if x.ndim == 2 and border is not None and stride == (1, 1) and threads <= 1:  # the common call: no steps
        return _cv2.filter2D(_readable(x), -1, kernel, dst=output_array(x.shape, x.dtype), anchor=anchor,
                             borderType=border)

    def run(image, dst, anchor, border):
        return _cv2.filter2D(image, -1, kernel, dst=dst, anchor=anchor, borderType=border)

    return _filter(plan, x, pad, run, run_jobs, threads)


def _tile_length(n: int) -> bool:
    """Whether ``n`` is a transform length of :func:`tiled_correlate`'s tiles: 2-3-5-smooth, from
    16 to 640, ``2**a * q`` with ``a >= 3``, and from 144 on ``a >= 4`` and ``q`` not 1. One
    core, a whole tile's steps (padded copy, both transforms, product, copy out), float64, Zen 5,
    2026-12-05, ns per point: 3.7-4.5 on such lengths from 128 to 960; 5.7 on 256, 512 and 1024,
    whose rows of a power-of-two stride in bytes fall on the same cache sets, 5.0 on 768; 4.5-5.9
    on lengths with three factors of two (200, 360, 600, 648, 1000); 5.8-8.0 beyond 1000."""
    q = n
    for p in (2, 3, 5):
        while q % p == 0:
            q //= p
    a = (n & -n).bit_length() - 1
    if q != 1 or not 16 <= n <= 640 or a < 3:
        return False
    return n <= 128 or (a >= 4 and n >> a != 1)


#: the transform lengths of :func:`tiled_correlate`'s tiles, ascending (the cost model picks the
#: pair per call: ``convkit.choose.dft_tiles``)
TILE_LENGTHS = tuple(n for n in range(16, 641) if _tile_length(n))


def tiled_correlate(plan, x: np.ndarray, w: np.ndarray, pad, lengths: tuple[int, int], run_jobs=None,
                    threads: int = 1) -> np.ndarray:
    """``VALIDCORR(pad(x), w)[::stride]`` for a plan that :func:`applies` to, through
    ``cv2.dft`` in tiles of ``lengths`` transform points per axis (``w``: the canonical, dilated
    kernel): overlap-save, each tile of the padded image transformed, multiplied by the
    conjugate of the kernel's spectrum (computed once), transformed back, and its
    ``L - M + 1`` leading outputs per axis kept (the circular correlation's outputs that do not
    wrap around). Zero fill is read as zeros around the image (no padded copy); other rules pad
    first. ``threads > 1``: the tiles of every image run on ``run_jobs`` (the backend's pool;
    OpenCV releases the GIL). Each tile is the same transforms of the same data whatever the
    number of threads, so the bits do not depend on it (S8).

    This is what ``cv2.filter2D`` does beyond its direct filter's taps (``crossCorr``), but with
    tiles that the cost model chooses: OpenCV's (about 4.5 times the kernel, at least 256
    points) often land on slow lengths, and it transforms float32 in float64; these tiles were
    1.0-3.2x faster on 512x512 to 3000x3000 images with 15x15 to 63x63 kernels, one near tie
    (docs/performance.md)."""
    cv2 = _cv2
    axes, moved, me, _, _, stride = _layout(plan)
    order = [plan.axes.index(a) for a in axes]
    pads = [plan.pads[i] for i in order]
    zeros = plan.boundary == "constant" and plan.fillvalue == 0
    if not (zeros and all(lo >= 0 and hi >= 0 for lo, hi in pads)):
        x, pads = pad(plan, x), [(0, 0), (0, 0)]
    images = np.moveaxis(x, axes, (-2, -1)) if moved else x
    (n0, n1), (m0, m1), (l0, l1) = images.shape[-2:], me, lengths
    (lo0, hi0), (lo1, hi1) = pads
    o0, o1 = n0 + lo0 + hi0 - m0 + 1, n1 + lo1 + hi1 - m1 + 1
    b0, b1 = l0 - m0 + 1, l1 - m1 + 1
    out = output_array(images.shape[:-2] + (o0, o1), images.dtype)
    if out is None:
        out = np.empty(images.shape[:-2] + (o0, o1), images.dtype)
    flat_out = out.reshape((-1, o0, o1))
    count = flat_out.shape[0]
    index = list(np.ndindex(*images.shape[:-2]))
    kernel = np.ascontiguousarray(w.reshape(me), dtype=images.dtype)
    kspec = cv2.copyMakeBorder(kernel, 0, l0 - m0, 0, l1 - m1, cv2.BORDER_CONSTANT)
    cv2.dft(kspec, dst=kspec, nonzeroRows=m0)
    flags = cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT

    def tile(i: int, r: int, c: int, block: np.ndarray) -> None:
        h, wd = min(b0, o0 - r), min(b1, o1 - c)
        top, left = r - lo0, c - lo1  # the tile's first row and column in the image
        a0, a1 = max(top, 0), min(top + h + m0 - 1, n0)
        c0, c1 = max(left, 0), min(left + wd + m1 - 1, n1)
        dst = flat_out[i, r:r + h, c:c + wd]
        if a1 <= a0 or c1 <= c0:  # zeros only
            dst[...] = 0
            return
        src = images[index[i]][a0:a1, c0:c1]
        cv2.copyMakeBorder(_readable(src), a0 - top, l0 - (a1 - top), c0 - left, l1 - (c1 - left),
                           cv2.BORDER_CONSTANT, dst=block)
        cv2.dft(block, dst=block, nonzeroRows=a1 - top)
        cv2.mulSpectrums(block, kspec, 0, block, conjB=True)
        cv2.idft(block, dst=block, flags=flags, nonzeroRows=h)
        dst[...] = block[:h, :wd]

    jobs = [(i, r, c) for i in range(count) for r in range(0, o0, b0) for c in range(0, o1, b1)]

    def run(a: int, b: int) -> None:
        block = np.empty((l0, l1), dtype=images.dtype)  # one per thread: no allocation per tile
        for job in jobs[a:b]:
            tile(*job, block)

    if threads > 1 and len(jobs) > 1:
        run_jobs(run, even_spans(len(jobs), min(len(jobs), 4 * threads)))
    else:
        run(0, len(jobs))
    if stride != (1, 1):
        out = out[..., ::stride[0], ::stride[1]]
    return np.moveaxis(out, (-2, -1), axes) if moved else out


#: transform lengths up to this many points take the caller's period as it is (every 2-3-5-smooth
#: length is fast there); longer ones go to :func:`dft_length`
_ANY_LENGTH_UP_TO = 512
#: how much slower, per point, OpenCV's DFT ran on lengths that :func:`_quick_length` rejects
#: than on those it accepts (float32 and float64, 512 to 2048 points a side)
_SLOW_LENGTH = 1.4
#: the steps of :func:`dft_linear_conv` besides the transforms (padding copies, the product of
#: the spectra, the kept slice), in points of a transform's ``L log2 L`` work per point
_LINEAR_PASSES = 6.0


def _quick_length(n: int) -> bool:
    """Whether ``cv2.dft`` transforms rows and columns of ``n`` points (more than
    :data:`_ANY_LENGTH_UP_TO`) at about its best speed per point: ``2**a * q`` with ``a >= 3``
    (``q`` odd), but not ``2**k`` or ``3 * 2**k`` from 768 on. Odd lengths and those with one or two factors
    of two ran mixed radices 1.4-2x slower per point (a float32 L x L transform, ns per point
    and bit, Zen 5, 2026-12-05: 675 = 3**3 * 5**2: 0.073, 720: 0.041; 1215: 0.077, 1280: 0.040),
    and so did ``2**k`` and ``3 * 2**k`` (1024: 0.063, 1536: 0.11), whose rows of a
    power-of-two stride in bytes fall on the same cache sets."""
    a = (n & -n).bit_length() - 1
    return a >= 3 and n >> a not in (1, 3)


@functools.cache
def dft_length(n: int) -> int:
    """The 2-3-5-smooth length ``>= n`` (at most 1.3 ``n``) of the least estimated time of
    :func:`dft_linear_conv` per axis: ``L (log2 L * s + p)`` with ``s`` = :data:`_SLOW_LENGTH`
    where :func:`_quick_length` rejects ``L`` (else 1) and ``p`` = :data:`_LINEAR_PASSES`.
    Lengths up to :data:`_ANY_LENGTH_UP_TO` stay as they are."""
    if n <= _ANY_LENGTH_UP_TO:
        return n
    best, cost = n, math.inf
    length, most = fast_len(n), (13 * n + 9) // 10
    while length <= most:
        slow = 1.0 if _quick_length(length) else _SLOW_LENGTH
        c = length * (math.log2(length) * slow + _LINEAR_PASSES)
        if c < cost:
            best, cost = length, c
        length = fast_len(length + 1)
    return best


def dft_linear_conv(x: np.ndarray, wf: np.ndarray, sizes, keep, check=None) -> np.ndarray:
    """``keep`` (a slice per axis) of the circular convolution, over a period of ``sizes``, of the
    2-D real ``x`` with ``wf`` (float32 or float64, the same dtype): the NumPy backend's real FFT
    (:meth:`linear_conv`) through ``cv2.dft``, in the data's own precision.

    The data are zero-padded to the period (``copyMakeBorder``); each forward transform skips the
    rows of zeros (``nonzeroRows``) and the inverse computes only the rows up to the last kept one.
    The spectra stay in OpenCV's packed real format (CCS), multiplied by ``mulSpectrums``. Each
    call to the library costs 1-2 us against 10-20 us for a ``scipy.fft`` call, and OpenCV's
    transforms are faster on periods up to about 540x540 (docs/performance.md). ``check(spec)``,
    if given, sees each spectrum before the product (its DC bin, ``spec[0, 0]``, is the sum of
    the data: S9's finiteness test). Each row and column is transformed by the same code
    whatever the number of threads, so the bits do not depend on it (S8). With ``keep``, a
    period longer than 512 per axis grows to OpenCV's fastest length nearby (:func:`dft_length`):
    the kept slices wrap around less, if at all, on a longer period."""
    cv2 = _cv2
    (l0, l1), (n0, n1), (m0, m1) = sizes, x.shape, wf.shape
    if keep is not None:
        l0, l1 = dft_length(l0), dft_length(l1)
    # two buffers of one period each, every step in place (fewer pages to touch, a lower peak)
    spec = cv2.copyMakeBorder(_readable(x), 0, l0 - n0, 0, l1 - n1, cv2.BORDER_CONSTANT)
    cv2.dft(spec, dst=spec, nonzeroRows=n0)
    kspec = cv2.copyMakeBorder(np.ascontiguousarray(wf), 0, l0 - m0, 0, l1 - m1, cv2.BORDER_CONSTANT)
    cv2.dft(kspec, dst=kspec, nonzeroRows=m0)
    if check is not None:
        check(spec)
        check(kspec)
    cv2.mulSpectrums(spec, kspec, 0, spec)  # its output argument is "c"
    del kspec
    rows = keep[0].indices(l0)[1] if keep is not None else l0
    cv2.idft(spec, dst=spec, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT, nonzeroRows=max(rows, 1))
    return spec if keep is None else spec[keep]


def sum_squares(a: np.ndarray) -> float:
    """``sum a**2`` of a C-contiguous float32/float64 array by ``cv2.norm`` (``NORM_L2SQR``,
    accumulated in float64): auto's data pass (S9) before an OpenCV filter, 1.7x (float32) and
    2x (float64) faster than ``numpy.einsum`` on a 2000x2000 image, and on OpenCV's own threads,
    which the filter then finds awake. Not finite when a value is NaN/Inf (or when float64
    squares overflow). The data go in as ONE ROW: as one column (a row per value) the float32
    sum took 2.7x as long."""
    return float(_cv2.norm(a.reshape(1, -1), _cv2.NORM_L2SQR))


def abs_sum(a: np.ndarray) -> float:
    """``sum |a|`` of a C-contiguous float32/float64 array by ``cv2.norm`` (``NORM_L1``,
    accumulated in float64, one row as in :func:`sum_squares`): not finite when a value is
    NaN/Inf. A kernel's finiteness test and its gain in one call (3-4 us on 11x11, against
    14 us for NumPy's ``isfinite`` test and ``sum(abs(w))``)."""
    return float(_cv2.norm(a.reshape(1, -1), _cv2.NORM_L1))


def total(a: np.ndarray) -> float:
    """``sum a`` of a C-contiguous float32/float64 array by ``cv2.sumElems`` (accumulated in
    float64, one row as in :func:`sum_squares`): the finiteness test of a filter's fresh
    output, cheaper than :func:`sum_squares` (docs/backends/numpy.md)."""
    return float(_cv2.sumElems(a.reshape(1, -1))[0])


def correlate_separable(plan, x: np.ndarray, factors: list[np.ndarray], pad, run_jobs=None,
                        threads: int = 1) -> np.ndarray:
    """The same with the kernel ``outer(*factors)`` (one 1-D factor per axis of
    ``plan.axes``, already dilated), through ``cv2.sepFilter2D``: one pass along the rows,
    one along the columns. Only for finite data (the separable path checks; OpenCV computes
    every product of these passes)."""
    order = [plan.axes.index(a) for a in sorted(plan.axes)]
    ky, kx = (np.ascontiguousarray(factors[i], dtype=x.dtype) for i in order)

    def run(image, dst, anchor, border):
        return _cv2.sepFilter2D(image, -1, kx, ky, dst=dst, anchor=anchor, borderType=border)

    return _filter(plan, x, pad, run, run_jobs, threads)


def _filter(plan, x: np.ndarray, pad, run, run_jobs=None, threads: int = 1) -> np.ndarray:
    """Apply the 2-D filter ``run(image, dst, anchor, border)`` to every image of ``x`` over
    the plan's two axes: with OpenCV's border where it is the plan's boundary rule, else on
    the padded input, cropped to its valid part. ``threads > 1``: groups of images, or bands
    of rows where there are fewer images than threads, run through ``run_jobs``."""
    axes, moved, me, border, anchor, stride = _layout(plan)
    padded = border is None
    if padded:
        x, border = pad(plan, x), _cv2.BORDER_CONSTANT
    images = np.moveaxis(x, axes, (-2, -1)) if moved else x
    out = output_array(images.shape, images.dtype)
    if images.ndim == 2 and threads <= 1:
        out = run(_readable(images), out, anchor, border)
    else:
        out = np.empty(images.shape, dtype=images.dtype) if out is None else out
        _run_images(images, out, lambda src, dst: run(src, dst, anchor, border),
                    (anchor[1], me[0] - 1 - anchor[1]), run_jobs, threads)
    if padded:
        out = out[..., :out.shape[-2] - me[0] + 1, :out.shape[-1] - me[1] + 1]  # the valid part
    if stride != (1, 1):
        out = out[..., ::stride[0], ::stride[1]]
    return np.moveaxis(out, (-2, -1), axes) if moved else out


def _run_images(images: np.ndarray, out: np.ndarray, filt, reach: tuple[int, int], run_jobs, threads: int):
    """``filt(src, dst)`` for every image of ``images`` into the same image of ``out``
    (C-contiguous). One core: image after image. More: the images split into groups, or,
    with fewer images than cores, each image split into bands of rows (:func:`_bands`)."""
    count = math.prod(images.shape[:-2])
    flat_out = out.reshape((-1,) + out.shape[-2:])
    if images.flags.c_contiguous:  # the usual batch: views, no per-image checks
        flat_in = images.reshape(flat_out.shape)

        def source(i):
            return flat_in[i]
    else:
        index = list(np.ndindex(*images.shape[:-2]))

        def source(i):
            return _readable(images[index[i]])

    if threads <= 1:
        for i in range(count):
            filt(source(i), flat_out[i])
    elif count >= threads:
        groups = min(count, 4 * threads)  # more jobs than cores: a core the machine takes away costs less
        def group(a: int, b: int) -> None:
            for i in range(a, b):
                filt(source(i), flat_out[i])

        run_jobs(group, even_spans(count, groups))
    else:
        for i in range(count):
            _bands(source(i), flat_out[i], filt, reach, run_jobs, threads)


#: the fewest output rows a band of one image gets (a thread's wake-up costs more than fewer
#: rows), and at least four times the rows a band borrows from its neighbours
_MIN_BAND_ROWS = 32


def _bands(src: np.ndarray, dst: np.ndarray, filt, reach: tuple[int, int], run_jobs, threads: int) -> None:
    """``filt`` of one image as ``threads`` bands of rows run concurrently.

    OpenCV filters an image into a destination of its own size, so each band filters its rows
    together with the ``reach = (above, below)`` rows its outputs read from the next bands; the
    outputs of those borrowed rows (wrong: the band's edge was a border there) land in the
    neighbours' rows. Once every band has ended, the rows around each cut are filtered again
    from a slab of the image wide enough to see their true neighbours. Every output is the
    same sum of the same products as in one call (a row's sums do not depend on the rows
    filtered with it), so the bits do not depend on the number of threads (S8)."""
    rows = src.shape[0]
    above, below = reach
    count = max(1, min(threads, rows // max(_MIN_BAND_ROWS, 4 * (above + below + 1))))
    if count == 1:
        filt(src, dst)
        return
    spans = even_spans(rows, count)

    def band(a: int, b: int) -> None:
        lo, hi = max(a - above, 0), min(b + below, rows)
        filt(src[lo:hi], dst[lo:hi])

    run_jobs(band, spans)
    for _, cut in spans[:-1] if above + below else ():  # the rows the bands wrote for each other
        lo, hi = max(cut - above, 0), min(cut + below, rows)
        s0, s1 = max(lo - above, 0), min(hi + below, rows)
        slab = np.empty((s1 - s0,) + src.shape[1:], dtype=dst.dtype)
        filt(src[s0:s1], slab)
        dst[lo:hi] = slab[lo - s0:hi - s0]

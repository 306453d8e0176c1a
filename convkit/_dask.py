"""Dask arrays in, lazy Dask arrays out (issue #6).

:func:`run` is what :func:`convkit.convolve` / :func:`convkit.correlate` call when an input
is a ``dask.array.Array``. It builds a graph with exactly the semantics of the unchunked
call (SPEC S1-S10), reusing :func:`convkit.plan.make_plan`:

1. ``x`` (the input that slides, ``in1`` unless the 'valid' swap of S3 applies) stays
   chunked; the kernel is computed to a concrete array (it must be small:
   :data:`MAX_KERNEL_BYTES`) and shipped once, as one graph key, to every task.
2. ``x`` is padded lazily with the plan's pads and boundary rule (the source index of every
   pad element comes from ``numpy.pad`` on ``arange(n)``, so long pads and every boundary,
   ``wrap`` included, repeat exactly the unchunked rule; no per-chunk boundary).
3. The halo ``Me - 1`` of each convolution axis is split into ``lead = pad_lo`` (clamped
   to ``[0, Me - 1]``) elements borrowed from the left neighbour and the rest from the
   right one (``dask.array.overlap``, ``boundary='none'``); chunks shorter than a side of
   the halo are first merged with their neighbours (chunks smaller than the kernel work).
4. Output ``i`` belongs to the chunk that holds its anchor ``i*stride + lead``, so 'same'
   with stride 1 keeps x's chunks. Each chunk finds its first output at the right phase
   (``ceil((p0 - lead) / stride)``, ``p0`` the chunk's offset: the stride runs across
   chunk boundaries) and calls the backend in mode 'valid' with the same stride,
   dilation, dtype, method and precision, by the name resolved in the caller and baked
   into the graph (context managers do not reach workers).

Importing this module imports no Dask; Dask is imported when a Dask array arrives.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from . import dispatch
from .errors import ConvkitTypeError, ConvkitValueError, DeviceMismatchError
from .options import Options
from .plan import Plan, make_plan

__all__ = ["MAX_KERNEL_BYTES", "run"]

#: largest kernel (in bytes) that is computed into memory and broadcast to every chunk
MAX_KERNEL_BYTES = 256 * 2**20


def _is_dask(x: Any) -> bool:
    from array_api_compat import is_dask_array

    return is_dask_array(x)


def _native(x: Any) -> Any:
    """A host array in native byte order (the chunks of a Dask array are converted per task)."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "biufc" and not x.dtype.isnative:
        return x.astype(x.dtype.newbyteorder("="))
    return x


def _check_known_chunks(name: str, x: Any) -> None:
    if any(math.isnan(c) for cs in x.chunks for c in cs):
        raise ConvkitValueError(
            f"{name} is a dask array with unknown chunk sizes {x.chunks}; "
            f"expected known sizes (call {name}.compute_chunk_sizes() first)"
        )


def _concrete_kernel(name: str, k: Any, why: str = "") -> Any:
    """The kernel as a concrete array: a dask kernel is computed, if it is small enough."""
    if not _is_dask(k):
        return k
    _check_known_chunks(name, k)
    nbytes = math.prod(k.shape) * k.dtype.itemsize
    if nbytes > MAX_KERNEL_BYTES:
        raise ConvkitValueError(
            f"{name} is a dask array of {nbytes} bytes{why}; the kernel is computed into memory and "
            f"sent to every chunk, so it must be at most convkit._dask.MAX_KERNEL_BYTES = "
            f"{MAX_KERNEL_BYTES} bytes (chunk the other input and keep the kernel small)"
        )
    return k.compute()


class _Carried:
    """A backend object that travels with the graph. Threads use it as it is; sending it to a
    worker process pickles it, and a backend that cannot pickle fails there, in the caller,
    with a convkit error that says what to do (never "not a known backend" in a worker)."""

    def __init__(self, backend: Any):
        self.backend = backend

    def __reduce__(self):
        import pickle

        try:
            pickle.dumps(self.backend)
        except Exception as exc:
            raise ConvkitTypeError(
                f"backend {getattr(self.backend, 'name', self.backend)!r} was registered at run time and "
                f"cannot be sent to Dask worker processes ({type(exc).__name__}: {exc}); make it picklable, "
                f"publish it as an entry point in the 'convkit.backends' group, or use a threaded scheduler"
            ) from None
        return (_Carried, (self.backend,))


def _backend_ref(be: Any) -> Any:
    """What the graph carries to name the backend: its name when a worker process can rebuild
    the same backend from it (a built-in or an entry point), else the object itself
    (:class:`_Carried`): a backend registered at run time is unknown to worker processes."""
    name = dispatch.portable_name(be)
    return name if name is not None else _Carried(be)


def _unwrap(backend: Any) -> Any:
    return backend.backend if isinstance(backend, _Carried) else backend


# ----------------------------------------------------------------------------- padding


def _segments(n: int, lo: int, hi: int, mode: str):
    """Pieces of ``pad(arange(n), (lo, hi), mode)`` (negative pads crop, after padding, as
    the backends do): ``("slice", a, b)`` runs of the original, ``("take", idx)`` pad runs."""
    plo, phi = max(lo, 0), max(hi, 0)
    base = np.arange(n)
    src = np.pad(base, (plo, phi), mode="edge" if mode == "constant" else mode)
    is_pad = np.ones(n + plo + phi, dtype=bool)
    is_pad[plo:plo + n] = False
    crop = slice(max(-lo, 0), n + plo + phi - max(-hi, 0))
    src, is_pad = src[crop], is_pad[crop]
    out, start = [], 0
    while start < len(src):
        stop = start + 1
        while stop < len(src) and is_pad[stop] == is_pad[start]:
            stop += 1
        if is_pad[start]:
            out.append(("take", src[start:stop]))
        else:
            out.append(("slice", int(src[start]), int(src[stop - 1]) + 1))
        start = stop
    return out


def _fill_block(block, value):
    return np.full_like(block, value)


def _pad(x, plan: Plan):
    """``x`` padded lazily on the convolution axes with the plan's pads and boundary."""
    import dask.array as da

    for a, (lo, hi) in zip(plan.axes, plan.pads):
        if lo == 0 and hi == 0:
            continue
        pieces = []
        for seg in _segments(x.shape[a], lo, hi, plan.boundary):
            if seg[0] == "slice":
                index = [slice(None)] * x.ndim
                index[a] = slice(seg[1], seg[2])
                pieces.append(x[tuple(index)])
            else:
                piece = da.take(x, seg[1], axis=a)
                if plan.boundary == "constant":
                    fill = bool(plan.fillvalue) if x.dtype.kind == "b" else plan.fillvalue
                    piece = piece.map_blocks(_fill_block, fill, dtype=x.dtype)
                pieces.append(piece)
        x = pieces[0] if len(pieces) == 1 else da.concatenate(pieces, axis=a)
    return x


def _fill_fits(fillvalue, dtype: np.dtype) -> bool:
    """Whether ``fillvalue`` survives a round trip through ``dtype`` (else pad in the acc dtype)."""
    if fillvalue == 0:
        return True
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            back = np.asarray(fillvalue).astype(dtype)
        except (TypeError, ValueError, OverflowError):
            return False
    return bool(np.array_equal(back, np.asarray(fillvalue), equal_nan=True))


# ----------------------------------------------------------------------------- chunking


def _min_chunks(chunks: tuple[int, ...], minimum: int) -> tuple[int, ...]:
    """Merge neighbouring chunks until every chunk is at least ``minimum`` long."""
    if minimum <= 1 or all(c >= minimum for c in chunks):
        return tuple(chunks)
    out: list[int] = []
    acc = 0
    for c in chunks:
        acc += c
        if acc >= minimum:
            out.append(acc)
            acc = 0
    if acc:
        if out:
            out[-1] += acc
        else:
            out.append(acc)
    return tuple(out)


def _axis_blocks(chunks: tuple[int, ...], stride: int, n_out: int, lead: int):
    """Per chunk ``(start, count)``: the chunk owns the outputs ``i`` whose anchor
    ``i*stride + lead`` lies in it; their first window starts ``start`` elements into the
    chunk extended by its halo (``lead`` elements on the left, except for the first chunk)."""
    res, p0 = [], 0
    for b, c in enumerate(chunks):
        p1 = p0 + c
        i0 = max(-(-(p0 - lead) // stride), 0)
        i1 = min(-(-(p1 - lead) // stride), n_out)
        count = max(i1 - i0, 0)
        left = p0 - (lead if b else 0)  # padded position of the extended chunk's first element
        res.append((i0 * stride - left if count else 0, count))
        p0 = p1
    return tuple(res)


def _useful_chunks(chunks: tuple[int, ...], stride: int, n_out: int, lead: int) -> tuple[int, ...]:
    """Merge chunks that would own no output (pad pieces, stride gaps) into a neighbour."""
    counts = [c for _, c in _axis_blocks(chunks, stride, n_out, lead)]
    out: list[int] = []
    carry = 0
    for c, n in zip(chunks, counts):
        if n == 0:
            carry += c
        else:
            out.append(c + carry)
            carry = 0
    if carry:
        out[-1] += carry  # some chunk owns output 0, so out is not empty
    return tuple(out)


# ----------------------------------------------------------------------------- tasks


def _block(ext, k, *, op, backend, axes, blocks, batch, me, stride, dilation, out_dtype, method,
           precision, block_info=None):
    """One output chunk: a 'valid' call on the chunk plus its halo, from the right phase."""
    from . import api

    loc = block_info[None]["chunk-location"]
    index = [slice(None)] * ext.ndim
    shape = list(ext.shape)
    for i, a in enumerate(axes):
        start, count = blocks[i][loc[a]]
        shape[a] = count
        index[a] = slice(start, start + (count - 1) * stride[i] + me[i])
    if 0 in shape:
        return np.empty_like(ext, shape=tuple(shape), dtype=out_dtype)
    kk = k
    if batch:  # the kernel varies along a batch axis: its slice for this chunk
        kindex = [slice(None)] * k.ndim
        for a, offsets in batch:
            kindex[a] = slice(offsets[loc[a]], offsets[loc[a] + 1])
        kk = k[tuple(kindex)]
    fn = api.convolve if op == "convolve" else api.correlate
    return fn(ext[tuple(index)], kk, "valid", axes=axes, stride=stride, dilation=dilation,
              dtype=out_dtype, method=method, precision=precision, backend=_unwrap(backend))


def _scalar_block(a, b, *, op, backend, out_dtype, method, precision):
    from . import api

    fn = api.convolve if op == "convolve" else api.correlate
    return fn(a, b, dtype=out_dtype, method=method, precision=precision, backend=_unwrap(backend))


def _conj_block(a):
    return np.conj(a)


# ----------------------------------------------------------------------------- entry


def run(op: str, in1, in2, options: Options, backend):
    """convolve/correlate with a Dask array input; returns a lazy Dask array (see module doc)."""
    import dask
    import dask.array as da

    d1, d2 = _is_dask(in1), _is_dask(in2)
    for name, x, isd in (("in1", in1, d1), ("in2", in2, d2)):
        if isd:
            _check_known_chunks(name, x)
    if not d1:
        in1 = np.asarray(in1) if isinstance(in1, (list, tuple, int, float, complex)) else in1
    if not d2:
        in2 = np.asarray(in2) if isinstance(in2, (list, tuple, int, float, complex)) else in2
    for name, x in (("in1", in1), ("in2", in2)):
        try:
            np.dtype(x.dtype)
        except (TypeError, AttributeError):
            raise ConvkitTypeError(f"{name} has dtype {getattr(x, 'dtype', None)}; expected a numeric "
                                   "dtype") from None
    shape1 = tuple(int(s) for s in in1.shape)
    shape2 = tuple(int(s) for s in in2.shape)
    dt1, dt2 = np.dtype(in1.dtype), np.dtype(in2.dtype)
    if not d1:
        in1 = _native(in1)
    if not d2:
        in2 = _native(in2)

    # the backend is resolved here, in the caller (context managers do not reach workers)
    meta1 = in1._meta if d1 else in1
    meta2 = in2._meta if d2 else in2
    be, _host = dispatch.resolve_backend(meta1, meta2, backend)
    plan = make_plan(op, shape1, shape2, dt1, dt2, options, be.capabilities)
    ref = _backend_ref(be)
    common = dict(op=op, backend=ref, out_dtype=plan.out_dtype, method=plan.requested_method,
                  precision=plan.precision)

    if plan.swap:
        x, k, kname = in2, in1, "in1"
        why = (" and mode='valid' with in2 at least as large as in1 on every axis swaps the inputs "
               "(SPEC S3), making in1 the kernel")
    else:
        x, k, kname = in1, in2, "in2"
        why = ""
    k = _concrete_kernel(kname, k, why)
    if not _is_dask(x):
        x = da.asarray(x)
    o1, o2 = dispatch.array_owner(x._meta), dispatch.array_owner(k)
    if o2 is not None and o1 != o2:
        raise DeviceMismatchError(
            f"the kernel is a {o2} array but the dask array has {o1 or 'numpy'} chunks; convert the "
            f"kernel to the chunks' array type first (e.g. numpy.asarray)"
        )
    if o1 is not None and o2 is None and hasattr(be, "asarray"):
        k = be.asarray(np.asarray(k))  # a host kernel for device chunks: copied once, here

    if plan.scalar:
        meta = np.empty_like(x._meta, shape=(), dtype=plan.out_dtype)
        return x.map_blocks(_scalar_block, dask.delayed(k, pure=True), dtype=plan.out_dtype, meta=meta,
                            **common)

    # place x and the kernel in ndim dimensions; broadcast x over batch axes where the kernel is wider
    x = x.reshape(plan.x_shape) if tuple(x.shape) != plan.x_shape else x
    k = k.reshape(plan.k_shape)
    bshape = tuple(plan.out_shape[a] if a not in plan.axes else x.shape[a] for a in range(plan.ndim))
    if bshape != tuple(x.shape):
        x = da.broadcast_to(x, bshape)

    if not _fill_fits(plan.fillvalue, x.dtype) and plan.boundary == "constant":
        x = x.astype(plan.acc_dtype)
    xp_ = _pad(x, plan)

    # the halo (Me - 1 per axis) is split so that output i sits in the chunk holding its
    # anchor i*stride + lead, lead = pad_lo (clamped): with 'same' the output keeps x's chunks
    me = plan.effective_kernel
    halos = [m - 1 for m in me]
    leads = [min(max(lo, 0), h) for (lo, _), h in zip(plan.pads, halos)]
    chunks = list(xp_.chunks)
    for i, (a, h, t) in enumerate(zip(plan.axes, halos, leads)):
        chunks[a] = _useful_chunks(_min_chunks(chunks[a], max(t, h - t)), plan.stride[i],
                                   plan.out_shape[a], t)
    xp_ = xp_.rechunk(tuple(chunks))
    depth = {a: (t, h - t) for a, h, t in zip(plan.axes, halos, leads) if h > 0}
    ext = da.overlap.overlap(xp_, depth=depth, boundary="none") if depth else xp_

    blocks, out_chunks = [], list(xp_.chunks)
    for i, a in enumerate(plan.axes):
        b = _axis_blocks(xp_.chunks[a], plan.stride[i], plan.out_shape[a], leads[i])
        blocks.append(b)
        out_chunks[a] = tuple(c for _, c in b)
    batch = []
    for a in range(plan.ndim):
        if a not in plan.axes and k.shape[a] != 1:
            offsets = tuple(int(v) for v in np.cumsum((0,) + xp_.chunks[a]))
            batch.append((a, offsets))

    meta = np.empty_like(x._meta, shape=(0,) * plan.ndim, dtype=plan.out_dtype)
    out = ext.map_blocks(
        _block, dask.delayed(k, pure=True), chunks=tuple(out_chunks), dtype=plan.out_dtype, meta=meta,
        axes=plan.axes, blocks=tuple(blocks), batch=tuple(batch), me=me, stride=plan.stride,
        dilation=plan.dilation, **common,
    )
    # drop the empty chunks of outputs-free chunks (stride, or the halo tail)
    tidy = tuple(tuple(c for c in cs if c) or cs for cs in out.chunks)
    if tidy != out.chunks:
        out = out.rechunk(tidy)
    if plan.flip_conj_result:
        out = da.flip(out, axis=plan.axes)
        if out.dtype.kind == "c":
            out = out.map_blocks(_conj_block, dtype=out.dtype)
    return out

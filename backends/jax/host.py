"""The CPU handoff: eager JAX calls on the CPU run on the NumPy backend's host engines where
the cost model puts them first.

On a CPU, XLA compiles a 2-D filter into loops 1.1-1.5x slower than OpenCV's hand-vectorised
``filter2D``/``sepFilter2D``, and it has nothing like OpenCV's tiled DFT (docs/backends/jax.md,
"CPU handoff"). A JAX array on the CPU is host memory: ``numpy.asarray`` reads it without a
copy, and ``jax.device_put(..., may_alias=True)`` adopts a 64-byte-aligned NumPy result without a copy
(:func:`convkit.backends._base.aligned_empty`). So a call that

* has concrete JAX arrays (not tracers: under ``jit``, ``vmap`` or ``grad`` XLA runs the plan)
  on one CPU device, or host data with ``backend="jax"`` while JAX's default device is a CPU,
* asks for ``auto`` or ``direct``, with two or more convolution axes and real float32/float64
  data and result, and
* has shapes on which the NumPy backend's ``auto`` (its method, engines and separable test,
  plus the handoff's fixed cost, :func:`handoff_seconds`, and a copy of the result where no
  engine writes it aligned) is estimated :data:`MARGIN` times faster than XLA's,

runs on the NumPy backend and comes back as a JAX array on the same device (``direct`` only
where the NumPy backend's ``auto`` is direct too, so that ``auto`` keeps ``direct``'s NaN/Inf
positions: :func:`_decide`). The numbers are the NumPy backend's (within the S5 bounds as
every backend's, independent of the number of cores by S8); dtypes and shapes are the plan's,
as on XLA.

``CONVKIT_JAX_HOST=0`` keeps every call on XLA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
from typing import Any

import numpy as np

from convkit.choose import choose_method, method_costs, separable_cost
from convkit.plan import Plan

from .._base import ALIGNMENT, aligned_empty, aligned_outputs, switched_off
from ._common import _jax

__all__ = ["HANDOFF_SECONDS", "adopt", "adoptable", "cpu_arrays", "forced", "handoff_seconds", "host_plan",
           "measure", "needs_check", "run_on_host"]

#: set CONVKIT_JAX_HOST=0 to run every JAX call on XLA
_ENV = "CONVKIT_JAX_HOST"

#: fixed seconds of a handoff on top of the NumPy backend's estimate: the time of a handed-off
#: call less the NumPy backend's on the same host data, on the 2-core development VM of
#: 2026-12-05 (docs/backends/jax.md, "CPU handoff"): 15-28 us by :func:`measure` (the fastest of
#: 30 calls), 37-44 us in the benchmark suite's means of back-to-back calls on 500x500 to
#: 512x512 images. That is convkit's dispatch of JAX arrays, the JAX array adopting the result
#: (:func:`_zero_copy_put`) and the caches the two libraries take from each other. The JAX
#: backend's CPU constants carry it as ``handoff_call``, which ``convkit tune --backend jax``
#: measures (:func:`measure`)
HANDOFF_SECONDS = 4e-5

#: how much faster the handoff must be estimated: both estimates are off by up to 2x at these
#: sizes (XLA:CPU's timings move by that much between runs), and a wrong handoff costs more
#: than a missed one (docs/backends/jax.md, "CPU handoff")
MARGIN = 1.25

#: seconds per byte of the result copied into a new JAX array where it is not aligned (about
#: 0.8 ms for 16 MB on the development VM) ...
_COPY_PER_BYTE = 5e-11
#: ... and per 4 KiB page of a copy above glibc's largest mmap threshold (32 MiB): each page of
#: such an allocation is faulted in afresh (a 64 MB copy took 19-39 ms)
_FAULT_PER_PAGE = 1e-6
_MMAP_ALWAYS = 32 * 2**20

#: ``True``: every call that may hand off does (the conformance suite's ``jax-host`` runner)
_FORCED = False


@contextlib.contextmanager
def forced():
    """Hand off every call that may, whatever the estimates (tests: the host path on every
    conformance case). Not thread-safe; tests only."""
    global _FORCED
    before, _FORCED = _FORCED, True
    try:
        yield
    finally:
        _FORCED = before


def _may(plan: Plan) -> bool:
    """The plan's own conditions (shapes and dtypes): ``auto`` or ``direct`` asked for, two or
    more convolution axes, real float32/float64 accumulation and result."""
    acc, out = plan.acc_dtype, plan.out_dtype
    return (plan.requested_method in ("auto", "direct") and not plan.scalar and len(plan.axes) >= 2
            and acc == out and acc.kind == "f" and acc.itemsize in (4, 8) and math.prod(plan.out_shape) > 0)


def host_plan(plan: Plan, jax_caps, host, adopt: bool) -> Plan | None:
    """The NumPy backend's plan for ``plan`` where the call hands off, else ``None``
    (:func:`_decide`; ``adopt``: the result comes back as a JAX array, which costs
    :func:`handoff_seconds` and perhaps a copy). Shapes only; kept per plan and constants.

    A plan whose method is not ``direct`` is an ``auto`` FFT or overlap-add: the caller checks
    its result (:func:`needs_check`)."""
    if not _may(plan) or switched_off(_ENV):
        return None
    global _decided_for
    host_caps = host.capabilities
    if _decided_for[0] is not jax_caps or _decided_for[1] is not host_caps or len(_DECIDED) > 512:
        _DECIDED.clear()  # new constants (convkit tune): new decisions
        _decided_for = (jax_caps, host_caps)
    key = (plan, adopt, _FORCED)
    found = _DECIDED.get(key, _UNKNOWN)
    if found is _UNKNOWN:
        found = _DECIDED[key] = _decide(plan, jax_caps, host_caps, host, adopt, _FORCED)
    return found


def needs_check(moved: Plan) -> bool:
    """Whether a handed-off result must be checked for NaN/Inf (:func:`_decide`)."""
    return moved.method != "direct"


#: decisions per (plan, adopt, forced) for the constants in ``_decided_for`` (hashing the
#: constants on every call would cost more than the rest of the decision)
_DECIDED: dict = {}
_decided_for: tuple = (None, None)
_UNKNOWN = object()


def _decide(plan: Plan, jax_caps, host_caps, host, adopt: bool, always: bool) -> Plan | None:
    """Where a call runs is decided on its geometry, with ``auto`` on both sides: the NumPy
    backend's ``auto`` plan (with the handoff's costs) against XLA's, by :data:`MARGIN`
    (``always``: whatever the estimates). Then, so that ``auto`` keeps the NaN/Inf positions
    of ``"direct"`` on the JAX backend (S9; where finite sums overflow those depend on the
    order of the sums, which differs between XLA's loop and the NumPy backend's):

    * the NumPy backend's pick is direct (a fused engine, or its separable test): ``auto`` and
      ``"direct"`` both hand off, and both have the NumPy backend's positions;
    * it is an FFT or overlap-add: only ``auto`` hands off, and a result that is not finite is
      computed again on XLA (whose ``auto`` falls back to XLA's direct, as ``"direct"`` runs).
    """
    geo = dict(out_dtype=plan.acc_dtype, out_shape=plan.out_shape, x_shape=plan.x_shape, k_shape=plan.k_shape,
               axes=plan.axes, pads=plan.pads, stride=plan.stride, dilation=plan.dilation,
               fill_finite=plan.boundary != "constant" or bool(np.isfinite(plan.fillvalue)))
    auto = dataclasses.replace(plan, requested_method="auto")
    if len(plan.axes) == 3 and host_caps.c_fused_3d:
        # XLA's own 3-D loops are as fast as Numba's on float32 and the handoff's fixed cost
        # lost what float64 gains (docs/backends/jax.md, "CPU handoff"): volumes keep XLA unless
        # the NumPy backend's SciPy methods win without its 3-D loop
        host_caps = dataclasses.replace(host_caps, c_fused_3d=0.0)
    moved = _with_auto(auto, geo, host_caps)
    if not always:
        host_seconds = _estimate(moved, host_caps)
        if adopt:
            host_seconds += handoff_seconds(jax_caps)
            if not host.writes_whole_output(moved):
                host_seconds += _copy_seconds(math.prod(plan.out_shape) * plan.out_dtype.itemsize)
        if MARGIN * host_seconds >= _estimate(_with_auto(auto, geo, jax_caps), jax_caps):
            return None
    if plan.requested_method == "auto":
        return moved
    return dataclasses.replace(plan, method="direct", nan_safe=False) if moved.method == "direct" else None


def handoff_seconds(caps) -> float:
    """The handoff's fixed cost in the JAX backend's constants ``caps`` (``handoff_call``;
    :data:`HANDOFF_SECONDS` where they have none, as constants saved before it existed)."""
    return HANDOFF_SECONDS if caps.handoff_call is None else caps.handoff_call


#: the image side and kernel of :func:`measure`: a mid-size call, where the decision falls
#: (the NumPy backend's ``auto`` runs its fused loop on it)
_MEASURE_SIDE, _MEASURE_TAPS = 512, 5
#: untimed calls of each path first (the first handoffs of a process take twice as long)
_MEASURE_WARM = 10
#: the least fixed cost :func:`measure` reports: two minima of noisy timings can differ by less
#: than nothing, and a handoff is never free
_MEASURE_FLOOR = 1e-5


def measure(best, side: int = _MEASURE_SIDE) -> float:
    """The handoff's fixed cost on this machine (``convkit tune --backend jax``): a forced
    handoff of a ``side``-square float32 image with a 5x5 kernel (JAX arrays on the CPU, result
    ready) less the NumPy backend's call on the same host data; ``best(fn)`` is the tuner's
    timer (the fastest of a few calls). At least :data:`_MEASURE_FLOOR`."""
    jax = _jax()
    from convkit.api import correlate

    rng = np.random.default_rng(2)
    x = rng.standard_normal((side, side)).astype(np.float32)
    k = rng.standard_normal((_MEASURE_TAPS, _MEASURE_TAPS)).astype(np.float32)
    cpu = jax.devices("cpu")[0]
    xj, kj = jax.device_put(x, cpu), jax.device_put(k, cpu)

    def handed():
        with forced():
            correlate(xj, kj, "same", backend="jax").block_until_ready()

    def on_host():
        correlate(x, k, "same", backend="numpy")

    for _ in range(_MEASURE_WARM):  # both paths' caches and lazy imports, before any timing
        handed()
        on_host()
    return max(best(handed) - best(on_host), _MEASURE_FLOOR)


def _with_auto(plan: Plan, geo: dict, caps) -> Plan:
    """``plan`` with the method ``auto`` picks on ``caps``."""
    method, nan_safe = choose_method("auto", **geo, caps=caps)
    return dataclasses.replace(plan, method=method, nan_safe=nan_safe)


def _estimate(plan: Plan, caps) -> float:
    """The cost model's seconds for ``plan``'s method on ``caps`` (the separable path where
    ``auto`` would test for it and it is cheaper)."""
    geo = dict(out_shape=plan.out_shape, x_shape=plan.x_shape, k_shape=plan.k_shape, axes=plan.axes)
    costs = method_costs(**geo, pads=plan.pads, dilation=plan.dilation, caps=caps, dtype=plan.acc_dtype,
                         stride=plan.stride)
    seconds = costs.get(plan.method, math.inf)
    if plan.requested_method == "auto" and not (plan.boundary == "constant" and plan.fillvalue != 0):
        seconds = min(seconds, separable_cost(**geo, caps=caps, dtype=plan.acc_dtype))
    return seconds


def _copy_seconds(nbytes: int) -> float:
    seconds = _COPY_PER_BYTE * nbytes
    if nbytes > _MMAP_ALWAYS:
        seconds += _FAULT_PER_PAGE * nbytes / 4096
    return seconds


def cpu_arrays(in1, in2) -> bool:
    """Whether both inputs are concrete JAX arrays on one and the same CPU device (a Python
    scalar or NumPy array beside one counts as host data)."""
    jax = _jax()
    device = None
    for a in (in1, in2):
        if isinstance(a, jax.core.Tracer):
            return False
        if isinstance(a, jax.Array):
            try:
                devices = a.devices()
            except Exception:  # deleted arrays and the like: XLA reports them
                return False
            if len(devices) != 1:
                return False
            (d,) = devices
            if d.platform != "cpu" or (device is not None and d != device):
                return False
            device = d
    return device is not None


def run_on_host(plan: Plan, host, in1, in2, aligned: bool = False) -> np.ndarray:
    """``plan`` (a :func:`host_plan`) on the NumPy backend, with the inputs read in place
    (``aligned``: the engines write aligned outputs, for :func:`adopt`)."""
    if not aligned:
        return host.execute(plan, np.asarray(in1), np.asarray(in2))
    with aligned_outputs():
        return host.execute(plan, np.asarray(in1), np.asarray(in2))


def adoptable(out: np.ndarray) -> np.ndarray:
    """``out`` where JAX can adopt it without a copy (C-contiguous, writeable, aligned), else an
    aligned copy of it (an FFT's view into its padded period, a view of an input): one copy,
    where ``jax.device_put`` of an unaligned array would copy twice (NumPy's, then PJRT's), and
    contiguous for the NaN/Inf check that follows FFT methods (2-3x faster than on a view)."""
    flags = out.flags
    if flags.c_contiguous and flags.writeable and out.ctypes.data % ALIGNMENT == 0:
        return out
    copy = aligned_empty(out.shape, out.dtype)
    np.copyto(copy, out)
    return copy


def adopt(out: np.ndarray, like) -> Any:
    """The NumPy result as a JAX array on the device of ``like`` (a JAX input): without a copy
    where it is a C-contiguous, aligned array of its own, else copied once (:func:`adoptable`;
    a read-only result is a view of an input, which JAX must not alias).

    ``jax.device_put(..., may_alias=True)`` adopts it where this JAX has that argument:
    JAX arrays made by ``jax.dlpack.from_dlpack`` from NumPy arrays made the process hang or
    abort at exit ("terminate called without an active exception") in 7 of 8 runs of a script
    that kept 50 of them (jax 0.10.2), and never with ``device_put`` (8 of 8 clean)."""
    jax = _jax()
    device = next(iter(like.devices()))
    out = adoptable(out)  # the caller's adoptable array as it is
    put = _zero_copy_put()
    if put is not None:
        return put(out, device)
    if _device_put_aliases():
        return jax.device_put(out, device, may_alias=True)
    result = jax.dlpack.from_dlpack(out)
    if next(iter(result.devices())) != device:  # another CPU device (XLA's host device count)
        result = jax.device_put(result, device)
    return result


@functools.lru_cache(maxsize=1)
def _zero_copy_put():
    """``put(array, device)``: the call that ``jax.device_put`` ends in for a NumPy array on one
    device (``xla_client.batched_device_put``, which PJRT's CPU client serves without a copy
    where the data are aligned), without the 15-17 us of Python that ``device_put`` spends
    before it (sharding inference, abstractification; the whole handoff's fixed cost was 60-75
    us with it). It is JAX's internal API, so it is used only where this JAX has it and a trial on
    a small array gives what ``device_put(..., may_alias=True)`` gives: a committed JAX array
    of the same shape and dtype on that device, sharing the NumPy array's memory. ``None``
    elsewhere (:func:`adopt` then calls ``device_put``)."""
    jax = _jax()
    try:
        from jax._src.lib import xla_client
        from jax.core import ShapedArray
        from jax.sharding import SingleDeviceSharding

        batched_device_put = xla_client.batched_device_put
    except Exception:  # another JAX: the public call
        return None

    @functools.lru_cache(maxsize=64)
    def abstract(shape: tuple[int, ...], dtype: np.dtype):
        return ShapedArray(shape, dtype)

    @functools.lru_cache(maxsize=8)
    def sharding(device):
        return SingleDeviceSharding(device)

    def put(array: np.ndarray, device):
        aval = abstract(array.shape, array.dtype)
        return batched_device_put(aval, sharding(device), [array], [device], True)  # committed

    try:
        device = jax.devices("cpu")[0]
        trial = aligned_empty((4, 16), np.float32)
        trial[...] = np.arange(64, dtype=np.float32).reshape(4, 16)
        result = put(trial, device)
        same = (isinstance(result, jax.Array) and result.shape == trial.shape and result.dtype == trial.dtype
                and result.devices() == {device} and result.committed
                and np.shares_memory(np.asarray(result), trial) and np.array_equal(np.asarray(result), trial))
    except Exception:
        return None
    return put if same else None


@functools.lru_cache(maxsize=1)
def _device_put_aliases() -> bool:
    """Whether this JAX's ``device_put`` takes ``may_alias`` (looked up once)."""
    return "may_alias" in inspect.signature(_jax().device_put).parameters

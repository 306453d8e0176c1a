"""Test-only backends "cupy-emulated" (CuPy 14) and "cupy13-emulated" (CuPy 13.0, the minimum
pyproject allows): backends/cupy.py's code on *strict* NumPy/SciPy stand-ins for cupy/cupyx, so
every line of the CuPy adapter runs on machines without a GPU.

Strict means (see :func:`strict_modules`):

* every cupy/cupyx function the backend calls is bound with :meth:`inspect.Signature.bind`
  against the signature recorded for that CuPy version (``tests/cupy_signatures.py``); a name
  not in the table is an ``AttributeError``, an unsupported keyword a ``TypeError``;
* ``cupy.pad`` accepts only CuPy's modes and per-mode keywords;
* ``cupyx.scipy.ndimage.correlate``/``correlate1d`` reject a ``cval`` CuPy's kernel generator
  turns into CUDA source that does not compile (a NaN other than ``numpy.nan`` itself), and
  float32 inputs accumulate in float32 with zero weights skipped, as cupyx's kernels do;
* results are :class:`DeviceArray` (0-d reductions stay arrays, as on CuPy), and every
  device->host read of one (``bool()``, ``float()``, ``int()``, ``.item()``, ``.get()``,
  ``cupy.asnumpy``) is counted in :data:`TRANSFERS`.

Registered by tests/conftest.py; run the whole conformance suite through both with
``pytest tests --backend cupy-emulated --backend cupy13-emulated``.
"""

from __future__ import annotations

import itertools
import math
import sys
import types

import numpy as np

import convkit
from convkit.backends import cupy as ck_cupy
from convkit.testing import Runner, register_runner

NAME = "cupy-emulated"
NAME13 = "cupy13-emulated"
#: runner name -> recorded CuPy version
VERSIONS = {NAME: "14", NAME13: "13"}


def emulated(version: str = "14", name: str | None = None) -> ck_cupy.CupyBackend:
    """backends/cupy.py's backend on the strict stand-ins of CuPy ``version``."""
    mods = strict_modules(version)
    name = name or (NAME if version == "14" else NAME13)
    return ck_cupy.CupyBackend(mods["cupy"], mods["cupy.fft"], mods["cupyx.scipy.fft"],
                               mods["cupyx.scipy.ndimage"], name=name)


def register() -> None:
    """Register the emulated backends and their runners (NumPy in, ``backend=NAME``, NumPy out)."""
    for name, version in VERSIONS.items():
        convkit.register_backend(name, lambda name=name, version=version: emulated(version, name))
        register_runner(Runner(name, name, array_check=lambda r: isinstance(r, np.ndarray)))


# ----------------------------------------------------------------------------- strict stand-ins


class Transfers:
    """Counts device->host reads of emulated device arrays (each one a sync on a real GPU)."""

    def __init__(self):
        self.count = 0
        self.log: list[str] = []

    def add(self, what: str) -> None:
        self.count += 1
        self.log.append(what)

    def reset(self) -> None:
        self.count = 0
        self.log = []


TRANSFERS = Transfers()
#: qualified name -> number of calls through the strict stand-ins
CALLS: dict[str, int] = {}


class EmulatedDevice:
    """``DeviceArray.device``: a context manager with ``synchronize()`` (counted)."""

    syncs = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self) -> None:
        EmulatedDevice.syncs += 1


class DeviceArray(np.ndarray):
    """An emulated CuPy array: NumPy underneath; reads to the host are counted."""

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        return np.asarray(arr).view(DeviceArray)  # 0-d results stay device arrays (CuPy)

    def __getitem__(self, index):
        r = super().__getitem__(index)
        return np.asarray(r).view(DeviceArray) if isinstance(r, np.generic) else r

    def _host(self, what: str):
        TRANSFERS.add(what)
        return self.view(np.ndarray)

    def __bool__(self):
        return bool(self._host("bool"))

    def __float__(self):
        return float(self._host("float"))

    def __int__(self):
        return int(self._host("int"))

    def __complex__(self):
        return complex(self._host("complex"))

    def __index__(self):
        return self._host("index").__index__()

    def item(self, *args):
        return self._host("item").item(*args)

    def tolist(self):
        return self._host("tolist").tolist()

    def get(self, stream=None, order="C", out=None):
        return np.array(self._host("get"), order=order)

    @property
    def device(self):
        return EmulatedDevice()


class CompileException(RuntimeError):
    """Stands in for cupy.cuda.compiler.CompileException (NVRTC rejected generated source)."""


def _host(v):
    if isinstance(v, DeviceArray):
        return v.view(np.ndarray)
    if isinstance(v, (list, tuple)):
        return type(v)(_host(e) for e in v)
    return v


def _dev(v):
    if isinstance(v, DeviceArray):
        return v
    if isinstance(v, (np.ndarray, np.generic)):
        return np.asarray(v).view(DeviceArray)
    return v


class _Strict(types.ModuleType):
    """A module holding only the recorded functions; any other name is an AttributeError."""

    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        raise AttributeError(f"{self.__name__}.{item} is not in the recorded CuPy signature table "
                             "(tests/cupy_signatures.py)")


def _bound(version: str, qual: str, impl):
    from cupy_signatures import signature

    sig = signature(version, qual)
    host_result = qual in ("cupy.asnumpy", "cupyx.scipy.fft.next_fast_len")

    def call(*args, **kwargs):
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"CuPy {version}: {qual}{sig} rejects this call: {exc}") from None
        CALLS[qual] = CALLS.get(qual, 0) + 1
        out = impl(*_host(args), **_host(kwargs))
        return out if host_result else _dev(out)

    call.__name__ = qual.rsplit(".", 1)[1]
    return call


def _ufunc(uf):
    def call(*args, **kwargs):
        return _dev(uf(*_host(args), **_host(kwargs)))

    call.outer = lambda a, b: _dev(uf.outer(_host(a), _host(b)))
    return call


def _cval_value(cval) -> float:
    """The value cupyx's generated kernel uses for ``cval``: ``numpy.nan`` by identity, +-inf by
    equality (_filters_core._generate_nd_kernel), anything else printed into the CUDA source."""
    if cval is np.nan:
        return math.nan
    if cval == np.inf or cval == -np.inf:
        return float(cval)
    text = f"{cval}"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # e.g. "nan": an undefined identifier in the CUDA source
        raise CompileException(f"NVRTC: identifier \"{text}\" is undefined in cast<W>({text})")
    return value


_ND_TO_PAD = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap",
              "constant": "constant", "grid-wrap": "wrap", "grid-mirror": "symmetric",
              "grid-constant": "constant"}


def _correlate_f32(x, w, mode, cval, origins):
    """cupyx's correlate kernel for float32 input: accumulation in float32 (W = float32), taps in
    C order, zero weights skipped."""
    w = np.asarray(w, np.float32)
    widths = []
    for m, o in zip(w.shape, origins):
        lo = m // 2 + o
        widths.append((lo, m - 1 - lo))
    kw = {"constant_values": np.float32(cval)} if _ND_TO_PAD[mode] == "constant" else {}
    xp = np.pad(x, widths, mode=_ND_TO_PAD[mode], **kw)
    acc = np.zeros(x.shape, np.float32)
    for tap in itertools.product(*(range(m) for m in w.shape)):
        wv = w[tap]
        if wv == 0:
            continue
        acc += xp[tuple(slice(t, t + n) for t, n in zip(tap, x.shape))] * wv
    return acc


def _out(res, output, input):
    if output is None:
        return res.astype(input.dtype, copy=False)
    return res.astype(np.dtype(output), copy=False)


def _nd_correlate(input, weights, output=None, mode="reflect", cval=0.0, origin=0, *, axes=None):
    import scipy.ndimage

    if mode not in _ND_TO_PAD:
        raise ValueError(f"boundary mode not supported: {mode!r}")
    value = _cval_value(cval)
    if axes is not None:  # CuPy 14: size-1 axes elsewhere (the signature table refuses it on 13)
        axes = tuple(a % input.ndim for a in np.atleast_1d(axes))
        shape, orig = [1] * input.ndim, [0] * input.ndim
        origin = np.broadcast_to(origin, (len(axes),))
        for a, o, m in zip(axes, origin, np.shape(weights)):
            shape[a], orig[a] = m, int(o)
        weights, origin = np.reshape(weights, shape), orig
    if np.ndim(weights) != input.ndim:
        raise RuntimeError("filter weights array has incorrect shape")
    origins = [int(o) for o in np.broadcast_to(origin, (input.ndim,))]
    if input.dtype == np.float32:
        return _out(_correlate_f32(input, weights, mode, value, origins), output, input)
    return scipy.ndimage.correlate(input, weights, output=output, mode=mode, cval=value, origin=origins)


def _nd_correlate1d(input, weights, axis=-1, output=None, mode="reflect", cval=0.0, origin=0):
    import scipy.ndimage

    if mode not in _ND_TO_PAD:
        raise ValueError(f"boundary mode not supported: {mode!r}")
    value = _cval_value(cval)
    if input.dtype == np.float32:
        axis = axis % input.ndim
        shape, origins = [1] * input.ndim, [0] * input.ndim
        shape[axis], origins[axis] = np.size(weights), int(origin)
        res = _correlate_f32(input, np.reshape(weights, shape), mode, value, origins)
        return _out(res, output, input)
    return scipy.ndimage.correlate1d(input, weights, axis=axis, output=output, mode=mode, cval=value,
                                     origin=origin)


def _pad(array, pad_width, mode="constant", **kwargs):
    from cupy_signatures import PAD_MODE_KWARGS

    if mode not in PAD_MODE_KWARGS:
        raise ValueError(f"mode '{mode}' is not supported")
    bad = set(kwargs) - set(PAD_MODE_KWARGS[mode])
    if bad:
        raise ValueError(f"unsupported keyword arguments for mode '{mode}': {sorted(bad)}")
    return np.pad(array, pad_width, mode=mode, **kwargs)


def _asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    TRANSFERS.add("asnumpy")
    return np.array(a, order=order)


def _asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    return np.array(a, dtype=dtype, order=order or "K", copy=True)


def strict_modules(version: str) -> dict[str, types.ModuleType]:
    """``{"cupy", "cupy.fft", "cupyx.scipy.fft", "cupyx.scipy.ndimage"}``: strict stand-ins of
    CuPy ``version`` (``"13"`` or ``"14"``) over NumPy/SciPy."""
    import scipy.fft
    from cupy_signatures import SIGNATURES, UFUNCS

    impls = {
        "cupy.asnumpy": _asnumpy, "cupy.asarray": _asarray, "cupy.pad": _pad,
        "cupy.zeros": np.zeros, "cupy.broadcast_to": np.broadcast_to, "cupy.flip": np.flip,
        "cupy.reshape": np.reshape, "cupy.ravel": np.ravel, "cupy.round": np.round, "cupy.around": np.round,
        "cupy.sum": np.sum, "cupy.all": np.all, "cupy.max": np.max, "cupy.amax": np.max,
        "cupy.stack": np.stack, "cupy.concatenate": np.concatenate, "cupy.where": np.where,
        "cupy.fft.rfftn": np.fft.rfftn, "cupy.fft.irfftn": np.fft.irfftn, "cupy.fft.fftn": np.fft.fftn,
        "cupy.fft.ifftn": np.fft.ifftn, "cupy.fft.rfft": np.fft.rfft, "cupy.fft.irfft": np.fft.irfft,
        "cupyx.scipy.fft.next_fast_len": scipy.fft.next_fast_len,
        "cupyx.scipy.ndimage.correlate": _nd_correlate, "cupyx.scipy.ndimage.correlate1d": _nd_correlate1d,
    }
    mods = {n: _Strict(n) for n in ("cupy", "cupy.fft", "cupyx.scipy.fft", "cupyx.scipy.ndimage")}
    for qual in SIGNATURES[version]:
        mod, attr = qual.rsplit(".", 1)
        setattr(mods[mod], attr, _bound(version, qual, impls[qual]))
    for name in UFUNCS:
        setattr(mods["cupy"], name, _ufunc(getattr(np, name)))
    mods["cupy"].ndarray = DeviceArray
    mods["cupy"].fft = mods["cupy.fft"]
    return mods


# ----------------------------------------------------------------------------- a fake "cupy" package
# For the availability tests and the loader path of backends/cupy.py: module objects that
# behave like cupy/cupyx (NumPy underneath) and can be told to fail the way broken CUDA
# installs fail.


class FakeCudaError(RuntimeError):
    """Stands in for cupy_backends.cuda.api.runtime.CUDARuntimeError."""


class FakeDevice:
    """A CUDA device: a context manager with ``synchronize()`` that counts its use."""

    entered = 0

    def __enter__(self):
        FakeDevice.entered += 1
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self) -> None:
        pass


class FakeArray(np.ndarray):
    """A "device array": a NumPy array whose ``.device`` is a :class:`FakeDevice`."""

    @property
    def device(self):
        return FakeDevice()


class _Namespace(types.ModuleType):
    """A module that falls back to ``base`` for every name it does not define."""

    def __init__(self, name: str, base):
        super().__init__(name)
        self._base = base

    def __getattr__(self, item):
        return getattr(self._base, item)


def _failing(exc: BaseException):
    def fn(*args, **kwargs):
        raise exc
    return fn


def fake_cupy(device_count=1, fail: dict[str, BaseException] | None = None) -> dict[str, types.ModuleType]:
    """Modules ``{name: module}`` to put in ``sys.modules`` in place of cupy and cupyx.

    ``fail`` maps a step to the exception it raises: ``"device_count"``, ``"alloc"``,
    ``"nvrtc"``, ``"cufft"``, ``"cublas"``.
    """
    import scipy.fft
    import scipy.ndimage

    fail = fail or {}
    cp = _Namespace("cupy", np)
    cp.ndarray = FakeArray
    cp.asarray = lambda a, dtype=None: np.asarray(a, dtype=dtype).view(FakeArray)
    cp.asnumpy = lambda a: np.asarray(a).view(np.ndarray)
    cp.empty = _failing(fail["alloc"]) if "alloc" in fail else np.empty
    cp.arange = _failing(fail["nvrtc"]) if "nvrtc" in fail else np.arange
    cp.fft = _Namespace("cupy.fft", np.fft)
    if "cufft" in fail:
        cp.fft.rfft = _failing(fail["cufft"])
    runtime = types.SimpleNamespace(
        getDeviceCount=_failing(fail["device_count"]) if "device_count" in fail else (lambda: device_count),
        runtimeGetVersion=lambda: 12090, driverGetVersion=lambda: 13000,
        getDeviceProperties=lambda i: {"name": b"Fake GPU", "totalGlobalMem": 80 * 2**30, "major": 9,
                                       "minor": 0})
    stream = types.SimpleNamespace(synchronize=lambda: None)
    cp.cuda = types.SimpleNamespace(runtime=runtime, Device=FakeDevice, get_current_stream=lambda: stream)
    if "cublas" in fail:
        cp.dot = cp.matmul = _failing(fail["cublas"])
    cupyx = types.ModuleType("cupyx")
    cscipy = types.ModuleType("cupyx.scipy")
    cfft = _Namespace("cupyx.scipy.fft", scipy.fft)
    cnd = _Namespace("cupyx.scipy.ndimage", scipy.ndimage)
    cupyx.scipy, cscipy.fft, cscipy.ndimage = cscipy, cfft, cnd
    return {"cupy": cp, "cupy.fft": cp.fft, "cupyx": cupyx, "cupyx.scipy": cscipy,
            "cupyx.scipy.fft": cfft, "cupyx.scipy.ndimage": cnd}


def install_fake_cupy(monkeypatch, **kwargs) -> dict[str, types.ModuleType]:
    """Put a fake cupy in ``sys.modules`` (undone by ``monkeypatch``) and forget cached answers."""
    mods = fake_cupy(**kwargs)
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return mods


def spy_ndimage(monkeypatch, be, name: str) -> list:
    """The keyword arguments of every call of ``be``'s (emulated) cupyx.scipy.ndimage function
    ``name`` from now on (one dict per call)."""
    nd = be._module("ndimage")
    real = getattr(nd, name)
    calls: list = []
    monkeypatch.setattr(nd, name, lambda *a, **k: calls.append(k) or real(*a, **k))
    return calls

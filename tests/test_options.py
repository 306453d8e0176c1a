"""The one options normaliser, and inputs that used to slip past validation (S3, S4, S11-S13).

Each test here failed before :mod:`convkit.options` existed: option values were validated
inside the plan cache, which treats ``True == 1 == 1.0``, and 0-d inputs skipped the
per-axis checks.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import convkit
from convkit.errors import ConvkitError, ConvkitTypeError, ConvkitValueError
from convkit.options import Options, make_options
from convkit.plan import physical_memory, plan_call

X = np.arange(10.0)
K = np.array([1.0, 2.0, 3.0])

# option values of the wrong type that equal a valid one (True == 1, 1.0 == 1, 1+0j == 1)
WRONG_BUT_EQUAL = [
    dict(stride=True),
    dict(dilation=True),
    dict(stride=np.True_),
    dict(stride=(1.0,)),
    dict(dilation=1.0),
    dict(mode="same", origin=1.0),
    dict(mode="same", origin=(True,)),
    dict(axes=0.0),
    dict(axes=(False,)),
    dict(mode=[(1.0, 1)]),
    dict(mode="same", fillvalue=1 + 0j),
]
# the valid call with an equal value, run first to fill the plan cache
EQUAL_VALID = [
    dict(stride=1),
    dict(dilation=1),
    dict(stride=1),
    dict(stride=(1,)),
    dict(dilation=1),
    dict(mode="same", origin=1),
    dict(mode="same", origin=(1,)),
    dict(axes=0),
    dict(axes=(0,)),
    dict(mode=[(1, 1)]),
    dict(mode="same", fillvalue=1),
]


@pytest.mark.parametrize("bad, good", list(zip(WRONG_BUT_EQUAL, EQUAL_VALID)), ids=repr)
def test_s13_wrong_types_refused_after_an_equal_valid_call(bad, good):
    """S13: validation does not depend on what ran before (the plan cache keys by value)."""
    convkit.convolve(X, K, **good)
    with pytest.raises(ConvkitError) as info:
        convkit.convolve(X, K, **bad)
    assert "\n" not in str(info.value)
    name = next(iter(k for k in bad if k != "mode" or len(bad) == 1))
    assert f"{name}=" in str(info.value)


def test_s13_wrong_types_refused_in_a_fresh_process_too():
    """S13: the same calls are refused in a process where nothing ran before."""
    code = textwrap.dedent(f"""
        import numpy as np, convkit
        bad = {WRONG_BUT_EQUAL!r}
        for kw in bad:
            try:
                convkit.convolve(np.arange(10.0), np.array([1.0, 2.0, 3.0]), **kw)
            except convkit.ConvkitError:
                continue
            raise SystemExit(f"accepted {{kw}}")
    """).replace("np.True_", "True")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("kw", [dict(stride=np.int64(2)), dict(dilation=np.int32(2)),
                                dict(stride=np.array([2])), dict(mode=np.array([[1, 2]]))])
def test_s13_numpy_integers_stay_accepted(kw):
    """S13: NumPy integers are integers (only bools and floats are refused)."""
    plain = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else int(v)) for k, v in kw.items()}
    np.testing.assert_array_equal(convkit.convolve(X, K, **kw), convkit.convolve(X, K, **plain))


BAD_FOR_ANY_SHAPE = [dict(stride=-1), dict(stride=0), dict(dilation=0), dict(origin=5), dict(axes=7),
                     dict(axes=-3), dict(stride=(1, 1, 1)), dict(mode=[(1, 1)] * 3), dict(stride=True)]


@pytest.mark.parametrize("kw", BAD_FOR_ANY_SHAPE, ids=repr)
@pytest.mark.parametrize("a, b", [(3.0, 2.0), (np.array([3.0]), np.array([2.0])),
                                  (np.ones((2, 2)), np.ones((1, 1)))], ids=["0-d", "1-element", "2-d"])
def test_s3_0d_inputs_get_the_same_option_checks(kw, a, b):
    """S3/S13: 0-d inputs are checked like any other shape (they returned the product before)."""
    with pytest.raises(ConvkitError):
        convkit.convolve(a, b, **kw)


def test_s3_0d_product_still_works():
    """S3: 0-d x 0-d is the product (conj(in2) for correlate)."""
    assert convkit.convolve(3.0, 2.0) == 6.0
    assert convkit.correlate(1 + 2j, 3 - 1j, stride=1, dilation=(), origin=()) == (1 + 2j) * (3 + 1j)


def test_options_are_hashable_and_keyed_by_fill_type():
    """The options object keys the plan cache: values that compare equal but differ in type
    give different keys."""
    a, b, c = make_options(fillvalue=1), make_options(fillvalue=1.0), make_options(fillvalue=True)
    assert len({a, b, c}) == 3
    assert make_options(stride=[2, 1]) == make_options(stride=(np.int64(2), 1))
    assert isinstance(make_options(), Options)
    assert make_options(mode="same").replace(stride=2).stride == 2
    with pytest.raises(ConvkitTypeError):
        make_options().replace(stride=2.0)


@pytest.mark.parametrize("dtype, fill", [(np.float32, 1e300), (np.float16, 1e6), (np.float16, -7e4),
                                         (np.complex64, 1e39j), (np.float32, 1e39 + 0j)])
def test_s13_fill_value_that_overflows_the_result_dtype(dtype, fill):
    """S13: a fill value that would become Inf in the result dtype is refused, as for integers."""
    with pytest.raises(ConvkitValueError, match="fillvalue"):
        convkit.convolve(X.astype(dtype), K.astype(dtype), "same", fillvalue=fill)


@pytest.mark.parametrize("fill", [np.inf, -np.inf, np.nan, 6.5e4])
def test_s9_non_finite_and_fitting_fill_values_stay_allowed(fill):
    """S9: NaN/Inf fill values are explicit and allowed; the largest float16 fits."""
    x = X.astype(np.float16)
    out = convkit.convolve(x, K.astype(np.float16) / 8, "same", fillvalue=fill, method="direct")
    ref = np.convolve(np.pad(X, 1, constant_values=fill), K / 8, "valid")
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(np.isfinite(out), np.isfinite(ref.astype(np.float16)))


# ----------------------------------------------------------------------------- absurd sizes


@pytest.mark.parametrize("kw", [dict(mode=[(10**12, 0)]), dict(dilation=2**70),
                                dict(mode="full", dilation=2**40),
                                dict(mode=[(2**70, 0)])], ids=repr)
def test_s13_outputs_beyond_the_machine_are_refused_before_allocating(kw):
    """S13: an output the machine cannot hold is a ConvkitValueError naming the argument, at
    plan time (no MemoryError, no OOM kill)."""
    name = "dilation" if "dilation" in kw else "mode"
    with pytest.raises(ConvkitValueError, match=name):
        plan_call("convolve", X, K, **kw)
    with pytest.raises(ConvkitValueError, match=name):
        convkit.convolve(X, K, **kw)


def test_output_limit_is_half_the_physical_memory():
    """The refusal threshold is documented as half of the physical memory."""
    n = int(0.5 * physical_memory() / 8) + 2  # float64 output of n - 1 samples
    plan_call("convolve", np.zeros(1), K, mode=[(n // 2, 0)])  # a quarter of the memory: planned
    with pytest.raises(ConvkitValueError, match="half of this machine's memory"):
        plan_call("convolve", np.zeros(1), K, mode=[(n, 0)])


# ----------------------------------------------------------------------------- dtypes and arrays


def test_s4_bfloat16_refusal_says_what_to_do():
    """S4/S13: bfloat16 is refused with the cast that makes it work."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.ones(5, dtype=ml_dtypes.bfloat16)
    with pytest.raises(ConvkitTypeError, match=r"astype\('float32'\)"):
        convkit.convolve(x, K)


@pytest.mark.parametrize("order", [">", "<"])
@pytest.mark.parametrize("dtype", ["f8", "i4", "c16", "u2"])
def test_s4_result_is_native_byte_order(order, dtype):
    """S4/S11: any byte order in, the native-order answer (and dtype) out."""
    x = (np.arange(12) % 7).astype(order + dtype)
    k = np.array([1, 2, 3]).astype(order + dtype)
    out = convkit.convolve(x, k)
    assert out.dtype.isnative and out.dtype == np.dtype(dtype)
    ref = np.convolve(np.real(x).astype(np.int64), np.real(k).astype(np.int64))  # small exact integers
    np.testing.assert_array_equal(out, ref.astype(dtype))


class _GradTensor:
    """Stands in for a torch tensor with requires_grad=True: NumPy conversion raises."""

    requires_grad = True
    shape = (3,)
    dtype = np.dtype(np.float32)

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy()")


def test_s13_unconvertible_tensor_gets_a_convkit_error():
    """S13: a tensor NumPy cannot read (torch requires_grad) is a one-line convkit error with the fix."""
    with pytest.raises(ConvkitTypeError, match=r"in1 .*detach\(\)") as info:
        convkit.convolve(_GradTensor(), K)
    assert "\n" not in str(info.value)


def test_s12_real_torch_tensor_requiring_grad_goes_to_the_torch_backend():
    """S12: a real torch tensor that requires grad is the torch backend's (it differentiates);
    the stand-in above covers tensors of libraries with no convkit backend."""
    torch = pytest.importorskip("torch")
    t = torch.ones(5, dtype=torch.float64, requires_grad=True)
    out = convkit.convolve(t, torch.tensor(K))
    assert isinstance(out, torch.Tensor) and out.requires_grad
    out.sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), np.full(5, K.sum()), rtol=1e-15)


# ----------------------------------------------------------------------------- backend objects


def test_s12_backend_instance_of_the_inputs_kind_is_accepted():
    """S12: ``backend=<instance>`` of the same kind as device inputs is that backend, not a conflict."""
    jax = pytest.importorskip("jax")
    from convkit.backends.jax import JaxBackend

    x = jax.numpy.asarray(X, dtype=np.float32)
    k = K.astype(np.float32)
    inst = JaxBackend()
    out = convkit.convolve(x, k, backend=inst)
    np.testing.assert_allclose(np.asarray(out), np.convolve(X, K), rtol=1e-6)
    out = convkit.convolve(x, k, backend=convkit.get_backend("jax"))
    np.testing.assert_allclose(np.asarray(out), np.convolve(X, K), rtol=1e-6)
    with pytest.raises(convkit.DeviceMismatchError):
        convkit.convolve(x, k, backend="numpy")


class _Renamed:
    """A picklable backend registered at run time (wraps the NumPy backend)."""

    name = "renamed-numpy"

    def __getattr__(self, attr):
        return getattr(convkit.get_backend("numpy"), attr)

    def __reduce__(self):
        return (_Renamed, ())


def test_dask_runtime_backend_reaches_worker_processes():
    """A backend registered at run time travels with the Dask graph, so worker processes (which
    never saw ``register_backend``) can run it."""
    da = pytest.importorskip("dask.array")
    import dask

    from convkit import dispatch

    dispatch.register_backend("renamed-numpy", _Renamed())
    try:
        x = da.from_array(np.arange(40.0), chunks=10)
        out = convkit.convolve(x, K, "same", backend="renamed-numpy")
        with dask.config.set(scheduler="processes", num_workers=2):
            got = out.compute()
        np.testing.assert_allclose(got, np.convolve(np.arange(40.0), K, "same"), rtol=1e-12)
    finally:
        dispatch._registry.pop("renamed-numpy", None)
        dispatch._loaded.pop("renamed-numpy", None)


def test_dask_unpicklable_runtime_backend_fails_in_the_caller():
    """A run-time backend that cannot travel runs on threads, and a process scheduler refuses it
    in the caller with a convkit error (not "not a known backend" in a worker)."""
    da = pytest.importorskip("dask.array")

    from convkit import dispatch

    class Local(_Renamed):
        name = "local-numpy"
        lock = __import__("threading").Lock()

        def __reduce__(self):
            return object.__reduce__(self)

    with pytest.raises(Exception):  # noqa: B017 (pickle raises AttributeError or PicklingError)
        pickle.dumps(Local())
    import dask

    dispatch.register_backend("local-numpy", Local())
    try:
        out = convkit.convolve(da.from_array(np.arange(40.0), chunks=10), K, backend="local-numpy")
        np.testing.assert_allclose(out.compute(scheduler="threads"), np.convolve(np.arange(40.0), K))
        with pytest.raises(ConvkitTypeError, match="cannot be sent to Dask worker processes"):
            with dask.config.set(scheduler="processes", num_workers=2):
                out.compute()
    finally:
        dispatch._registry.pop("local-numpy", None)
        dispatch._loaded.pop("local-numpy", None)


def test_plans_hash_once_and_pickle_without_the_cached_hash():
    """Plans and options key the caches: the hash is cached on the plan, equal plans hash equal,
    and the cached value is not pickled (string hashes differ between processes)."""
    import dataclasses

    p = plan_call("convolve", np.ones((5, 5)), np.ones((3, 3)), convkit.get_backend("numpy").capabilities,
                  mode="same")
    h = hash(p)
    assert hash(p) == h
    state = pickle.loads(pickle.dumps(p)).__dict__
    assert "_hash" not in state
    q = pickle.loads(pickle.dumps(p))
    assert q == p and hash(q) == h
    r = dataclasses.replace(p, method="fft")
    assert r != p and hash(r) == hash(dataclasses.replace(p, method="fft"))
    opts = make_options(mode="same", boundary="wrap")
    objects = (p, opts, dataclasses.replace(opts, boundary="constant"))
    for obj in objects:
        hash(obj)
        assert "_hash" not in pickle.loads(pickle.dumps(obj)).__dict__
    assert hash(objects[1]) != hash(objects[2]) and objects[1] != objects[2]
    caps = convkit.get_backend("numpy").capabilities
    hash(caps)
    assert type(caps)(**vars(caps)) == caps  # capabilities keep no cache among their fields
    code = ("import pickle, sys; from dataclasses import replace\n"
            "for obj in pickle.loads(sys.stdin.buffer.read()):\n"
            "    assert hash(obj) == hash(replace(obj)), ('stale hash', type(obj))")
    subprocess.run([sys.executable, "-c", code], input=pickle.dumps(objects), check=True)

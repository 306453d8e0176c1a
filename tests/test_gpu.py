"""Tests that need a working CUDA device (marked ``gpu``).

The rule (also in the README):

* plain ``pytest``: a gpu test runs when its device backend works, else it is skipped
  with the reason (no GPU on development and CI machines);
* ``pytest -m gpu``: the run asks for a GPU. CuPy must work: every CuPy gpu test, and the
  conformance suite on the ``cupy``/``cupy-host`` runners (marked gpu too), FAILS when
  CuPy cannot use a device. JAX gpu tests run when JAX sees a GPU and are skipped when
  JAX is CPU-only, unless ``--backend jax`` is also given: then they fail too;
* ``--backend cupy`` (or ``CONVKIT_TEST_BACKENDS=cupy``): the whole conformance suite on
  CuPy; an unavailable CuPy fails it (tests/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_matches, random_array, reference

import convkit
from convkit import cli
from convkit.testing import direct_bound

pytestmark = pytest.mark.gpu


def _gpu_required(config, backend: str) -> bool:
    expr = config.getoption("-m") or ""
    selected = "gpu" in expr and "not gpu" not in expr
    requested = list(config.getoption("--backend") or [])
    if backend == "cupy":
        return selected or "cupy" in requested or "cupy-host" in requested
    return selected and backend in requested


def _jax_gpu() -> tuple[bool, str]:
    try:
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
    except Exception as exc:
        return False, f"JAX cannot run ({type(exc).__name__}: {exc})"
    return (True, "") if gpus else (False, "JAX sees no GPU (CPU-only jaxlib or no device)")


@pytest.fixture(params=["cupy", "jax"])
def device_backend(request) -> str:
    """A backend name whose arrays live on a CUDA device; fail or skip by the rule above."""
    name = request.param
    if name == "cupy":
        ok, reason = _cupy_status()
    else:
        ok, reason = _jax_gpu()
    if not ok:
        if _gpu_required(request.config, name):
            pytest.fail(f"a GPU test was requested but {name} cannot use a CUDA device: {reason}")
        pytest.skip(f"{name}: {reason}")
    return name


def _cupy_status() -> tuple[bool, str]:
    from convkit.backends import cupy as ck_cupy

    return ck_cupy.backend.available()


@pytest.fixture
def cupy_device(request):
    ok, reason = _cupy_status()
    if not ok:
        if _gpu_required(request.config, "cupy"):
            pytest.fail(f"a GPU test was requested but CuPy cannot use a CUDA device: {reason}")
        pytest.skip(f"cupy: {reason}")
    import cupy

    return cupy


def test_conformance_matrix_on_the_device(device_backend):
    """`convkit check`'s matrix (modes x boundaries x dtypes x methods) passes on the device."""
    bad = [r for r in cli.run_matrix(device_backend) if not r.ok]
    assert not bad, "; ".join(f"{r.method}/{r.dtype}: {r.messages[:2]}" for r in bad)


def test_float32_is_full_precision_on_the_device(device_backend, rng):
    """S6: precision='highest' means no TF32: 2-D float32 results within the float32 direct bound."""
    x = rng.standard_normal((256, 256)).astype(np.float32)
    k = rng.standard_normal((9, 9)).astype(np.float32)
    out = convkit.convolve(x, k, "same", method="direct", backend=device_backend)
    exact = reference("convolve", x, k, mode="same")
    err = np.abs(np.asarray(out, np.float64) - exact)
    assert np.all(err <= direct_bound(x, k, mode="same") + 1e-30)


def test_cupy_arrays_in_cupy_arrays_out_on_their_device(cupy_device, rng):
    """S11: CuPy in, CuPy out on the same device; host in, NumPy out."""
    cp = cupy_device
    a, b = rng.standard_normal(1000), rng.standard_normal(31)
    da, db = cp.asarray(a), cp.asarray(b)
    out = convkit.correlate(da, db, "same")
    assert isinstance(out, cp.ndarray) and out.device == da.device
    assert_matches(out.get(), reference("correlate", a, b, mode="same"), a, b, "correlate", mode="same")
    host = convkit.correlate(a, b, "same", backend="cupy")
    assert type(host) is np.ndarray
    if cp.cuda.runtime.getDeviceCount() > 1:  # pragma: no cover - multi-GPU machines
        with cp.cuda.Device(1):
            d1a, d1b = cp.asarray(a), cp.asarray(b)
        out1 = convkit.correlate(d1a, d1b, "same")
        assert out1.device.id == 1


def test_cupy_integers_exact_and_nan_safe_auto(cupy_device, rng):
    """S5 wrap-around integers bit-identical to the exact reference; S9 NaN stays local."""
    cp = cupy_device
    a = random_array(rng, (40, 33), "int32")
    b = random_array(rng, (5, 4), "int32")
    out = convkit.convolve(cp.asarray(a), cp.asarray(b), "full")
    np.testing.assert_array_equal(out.get(), reference("convolve", a, b))
    x = rng.standard_normal(20000)
    x[5000] = np.nan
    k = rng.standard_normal(2000)
    res = convkit.convolve(cp.asarray(x), cp.asarray(k)).get()
    assert np.isnan(res).sum() == 2000


def test_cupy_every_dtype_and_boundary(cupy_device, rng):
    for dtype in ("bool", "uint8", "int64", "float16", "float32", "float64", "complex64", "complex128"):
        for boundary in ("fill", "symm", "mirror", "nearest", "wrap"):
            a = random_array(rng, (12, 9), dtype, small=True)
            b = random_array(rng, (4, 3), dtype, small=True)
            kw = dict(mode="same", boundary=boundary)
            out = convkit.correlate(cupy_device.asarray(a), cupy_device.asarray(b), **kw).get()
            assert_matches(out, reference("correlate", a, b, **kw), a, b, "correlate", **kw)

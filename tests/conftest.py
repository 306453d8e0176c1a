"""Shared fixtures: the conformance suite runs once per available backend runner.

``--backend NAME`` (repeatable) or ``CONVKIT_TEST_BACKENDS=a,b`` restricts the run to those
backends; a backend requested that way but unavailable FAILS the run (a GPU job can never
pass by skipping everything). Without a request, unavailable runners are left out and named,
with their reason, at the end of the run.
"""

from __future__ import annotations

import os

# the suite runs in several worker processes (pytest-xdist, README's test command): on a GPU
# each would otherwise reserve most of the device memory for JAX at its first GPU call
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import convkit  # noqa: E402
from convkit import testing as ck_testing  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--backend", action="append", default=[],
                     help="run the conformance suite on this backend/runner only (repeatable)")


def _requested(config) -> list[str] | None:
    names = list(config.getoption("--backend"))
    env = os.environ.get("CONVKIT_TEST_BACKENDS", "")
    names += [n.strip() for n in env.split(",") if n.strip()]
    return names or None


def _gpu_selected(config) -> bool:
    """``-m gpu`` (or any -m expression naming gpu but not ``not gpu``) asks for a working GPU."""
    expr = config.getoption("-m") or ""
    return "gpu" in expr and "not gpu" not in expr


def pytest_configure(config):
    import cupy_emulated  # test-only backend: backends/cupy.py on NumPy (tests/cupy_emulated.py)

    cupy_emulated.register()
    _register_numpy_variants()


def _register_numpy_variants() -> None:
    """Runners of the NumPy backend besides ``numpy`` (which runs the host engines found here):
    ``numpy-scipy`` without any host engine (SciPy and NumPy only), where one is installed, and
    ``numpy-numba`` with Numba's loops on every call they apply to, where Numba is installed
    (the ``numpy`` runner uses them only for calls large enough to beat OpenCV, which the
    suite's small arrays rarely are)."""
    from convkit.backends import numba_engine, opencv_engine, torch_engine
    from convkit.backends.numpy import NumpyBackend
    from convkit.testing import Runner, register_runner

    variants = {}
    if opencv_engine.installed() or torch_engine.installed() or numba_engine.installed():
        variants["numpy-scipy"] = dict(engines=False)
    if numba_engine.installed():
        variants["numpy-numba"] = dict(numba_always=True)
    for name, kwargs in variants.items():

        def factory(name=name, kwargs=kwargs) -> NumpyBackend:
            be = NumpyBackend(**kwargs)
            be.name = name
            return be

        convkit.register_backend(name, factory)
        register_runner(Runner(name, name, array_check=lambda r: isinstance(r, np.ndarray)))


_UNAVAILABLE: dict[str, str] = {}


def _wanted(config, r) -> bool:
    """Run this runner? Unavailable runners are left out of a plain run (reported once in the
    summary instead of skipping every test), but kept where they must FAIL: when requested with
    --backend / CONVKIT_TEST_BACKENDS, or under ``-m gpu`` for runners marked gpu."""
    ok, reason = r.available()
    if ok or _requested(config):
        return True
    if _gpu_selected(config) and any(getattr(m, "name", "") == "gpu" for m in r.marks):
        return True
    _UNAVAILABLE[r.name] = reason
    return False


def pytest_generate_tests(metafunc):
    if "runner" in metafunc.fixturenames:
        runners = [r for r in ck_testing.runners(_requested(metafunc.config)) if _wanted(metafunc.config, r)]
        params = [pytest.param(r, marks=r.marks, id=r.name) for r in runners]
        metafunc.parametrize("runner", params, indirect=True)


def pytest_collection_modifyitems(config, items):
    """Deselect the oracle-grid cases sampled out on JAX runners (see reference.sampled_out)."""
    from reference import sampled_out

    keep, drop = [], []
    for item in items:
        (drop if sampled_out(item) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter):
    if not _UNAVAILABLE:  # pytest-xdist's controller collects nothing: ask the runners here
        config = terminalreporter.config
        for r in ck_testing.runners(_requested(config)):
            _wanted(config, r)
    for name, reason in sorted(_UNAVAILABLE.items()):
        terminalreporter.write_line(f"conformance runner {name!r} not run: {reason}")


@pytest.fixture
def runner(request):
    r = request.param
    ok, reason = r.available()
    if not ok:
        if _requested(request.config) or (_gpu_selected(request.config) and any(
                getattr(m, "name", "") == "gpu" for m in r.marks)):
            pytest.fail(f"requested backend {r.name!r} is unavailable: {reason}")
        pytest.skip(f"backend {r.backend!r} unavailable: {reason}")
    return r


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _clean_dispatch_state():
    """Each test starts with no process default and CONVKIT_BACKEND re-read, and with the NumPy
    backend's threads in use (a busy spell that an earlier test's late thread started is over:
    ``backends.numpy._map``)."""
    from convkit import dispatch
    from convkit.backends import numpy as nb

    dispatch.reload_environment()
    nb._busy_until = 0.0
    yield
    dispatch.reload_environment()


@pytest.fixture(params=["14", "13"])
def emu(request):
    """The strict emulation of CuPy 14 and of CuPy 13.0 (tests/cupy_emulated.py)."""
    from cupy_emulated import emulated

    return emulated(request.param)


@pytest.fixture
def jax_on_cpu(monkeypatch):
    """Run a test of the JAX backend's CPU paths (cut direct, CPU cost model, handoff) as on a
    machine whose JAX computes on the CPU, also where JAX's default device is a GPU: host data
    go to the CPU device and the backend plans and runs for the CPU."""
    jax = pytest.importorskip("jax")
    jb = pytest.importorskip("convkit.backends.jax")
    monkeypatch.setattr(jb, "_platform", lambda *arrays: "cpu")
    monkeypatch.setattr(jb.backend, "_cost_platform", "cpu")
    jb._FUNCTIONS.clear()
    with jax.default_device(jax.devices("cpu")[0]):
        yield jb
    jb._FUNCTIONS.clear()

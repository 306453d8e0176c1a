"""The backend contract: backends describe themselves, and the core holds no per-backend table
(S12). A backend added through an entry point gets dispatch by array type, availability
reporting, install hints and conformance runners without any edit to convkit's core.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from importlib.metadata import EntryPoint

import numpy as np
import pytest

import convkit
from convkit import dispatch, testing
from convkit.backends.numpy import NumpyBackend

X = np.arange(8.0)
K = np.array([1.0, 2.0, 3.0])


class FakeArray:
    """An array type of a pretend framework ``fakearr`` (a NumPy array inside)."""

    def __init__(self, a):
        self.a = np.asarray(a)
        self.shape, self.dtype = self.a.shape, FakeDtype(self.a.dtype)


class FakeDtype:
    def __init__(self, dt):
        self.np = np.dtype(dt)


class FakeBackend(NumpyBackend):
    """A third-party backend built on NumPy for arrays of ``fakearr``."""

    name = "fakearr"
    array_module = "fakearr"
    install_hint = "install fakearr with `pip install fakearr`"
    asked: list = []

    def owns(self, x):
        FakeBackend.asked.append(type(x).__name__)
        return isinstance(x, FakeArray)

    def dtype_of(self, x):
        return x.dtype.np  # not a NumPy dtype: the backend translates it

    def execute(self, plan, in1, in2):
        a = in1.a if isinstance(in1, FakeArray) else in1
        b = in2.a if isinstance(in2, FakeArray) else in2
        return FakeArray(super().execute(plan, a, b))

    def test_runners(self):
        return [testing.Runner("fakearr", "fakearr", to_device=FakeArray,
                               array_check=lambda r: isinstance(r, FakeArray))]


class Unavailable(NumpyBackend):
    name = "nowhere"
    install_hint = "install nowhere with `pip install nowhere`"

    def available(self):
        return False, "no nowhere device"


_MODULE = types.ModuleType("convkit_test_fake_backends")
_MODULE.fake = FakeBackend()
_MODULE.nowhere = Unavailable()


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Two third-party entry points next to convkit's own, as an installed package adds them."""
    import importlib.metadata

    real = importlib.metadata.entry_points
    extra = [EntryPoint("fakearr", "convkit_test_fake_backends:fake", dispatch.ENTRY_POINT_GROUP),
             EntryPoint("nowhere", "convkit_test_fake_backends:nowhere", dispatch.ENTRY_POINT_GROUP)]

    def entry_points(**kw):
        found = real(**kw)
        return list(found) + (extra if kw.get("group") == dispatch.ENTRY_POINT_GROUP else [])

    monkeypatch.setitem(sys.modules, "convkit_test_fake_backends", _MODULE)
    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    saved = dict(dispatch._registry)
    monkeypatch.setattr(dispatch, "_entry_points_scanned", False)
    dispatch._registry.clear()
    dispatch.reload_environment()
    yield
    dispatch._registry.clear()
    dispatch._registry.update(saved)
    dispatch.reload_environment()
    testing._RUNNERS.pop("fakearr", None)


def test_s12_builtins_are_entry_points():
    """S12: convkit's own backends are found through the entry-point group, like anyone's."""
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group=dispatch.ENTRY_POINT_GROUP)}
    assert {"numpy", "jax", "cupy"} <= names
    dispatch.list_backends()
    for name in ("numpy", "jax", "cupy"):
        assert dispatch._source(dispatch._registry[name]).startswith("entry point convkit.backends.")


def test_s12_core_holds_no_backend_table():
    """S12: dispatch and testing name no backend library (the backends describe themselves)."""
    import inspect

    for mod in (dispatch, testing):
        code = "\n".join(line for line in inspect.getsource(mod).splitlines()
                         if not line.lstrip().startswith(("#", ">>>", "...")))
        for word in ('"jax"', "'jax'", '"cupy"', "'cupy'", "convkit.backends.jax", "convkit.backends.cupy",
                     "is_jax_array", "is_cupy_array"):
            assert word not in code, f"{mod.__name__} names {word}"


def test_s12_third_party_entry_point_dispatches_by_array_type(fake_entry_points):
    """S12: a new backend's arrays pick it, its dtype translation is used, its result type comes
    back, and its runners join the conformance suite, with no core edit."""
    sys.modules.setdefault("fakearr", types.ModuleType("fakearr"))
    try:
        out = convkit.convolve(FakeArray(X), K, "same")
        assert isinstance(out, FakeArray)
        np.testing.assert_allclose(out.a, np.convolve(X, K, "same"), rtol=1e-15)
        assert "fakearr" in [r.name for r in testing.runners()]
        assert dispatch.array_owner(FakeArray(X)) == "fakearr"
    finally:
        sys.modules.pop("fakearr", None)


def test_s12_owns_is_not_asked_before_the_array_module_is_imported(fake_entry_points):
    """S12: recognising an array never imports or asks a framework that is not imported yet."""
    FakeBackend.asked.clear()
    sys.modules.pop("fakearr", None)
    assert dispatch.array_owner(object()) is None
    assert FakeBackend.asked == []


def test_s12_unavailable_entry_point_uses_its_own_install_hint(fake_entry_points):
    """S12: the hint comes from the backend object, not from a table in the core."""
    with pytest.raises(convkit.BackendUnavailableError, match=r"no nowhere device.*pip install nowhere"):
        convkit.convolve(X, K, backend="nowhere")
    rows = {b.name: b for b in convkit.list_backends()}
    assert rows["nowhere"].available is False and rows["fakearr"].available


def test_s12_get_backend_without_argument_is_the_host_default(monkeypatch):
    """S12: ``get_backend()`` is the backend a host call would use now."""
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    dispatch.reload_environment()
    assert convkit.get_backend().name == "numpy"
    jax_ok = any(b.name == "jax" and b.available for b in convkit.list_backends())
    if jax_ok:
        with convkit.use_backend("jax"):
            assert convkit.get_backend().name == "jax"
        monkeypatch.setenv(dispatch.ENV_VAR, "cupy,jax")  # without a usable GPU CuPy falls back
        dispatch.reload_environment()
        cupy_ok = any(b.name == "cupy" and b.available for b in convkit.list_backends())
        assert convkit.get_backend().name == ("cupy" if cupy_ok else "jax")
    convkit.set_backend("numpy")
    try:
        assert convkit.get_backend().name == "numpy"
    finally:
        dispatch.reload_environment()


def test_s14_jax_subclass_overrides_are_used():
    """S14: the jitted function runs the backend object's own methods (a subclass's overrides)."""
    pytest.importorskip("jax")
    from convkit.backends.jax import JaxBackend

    calls = []

    class Traced(JaxBackend):
        def run_plan(self, plan, platform, in1, in2):
            calls.append(plan.method)
            return super().run_plan(plan, platform, in1, in2)

    out = convkit.convolve(X, K, backend=Traced())
    np.testing.assert_allclose(out, np.convolve(X, K), rtol=1e-14)
    assert calls, "the subclass's run_plan was not traced"


def test_s11_dispatch_imports_no_framework():
    """S11/S12: importing convkit and a host call import no backend framework."""
    code = textwrap.dedent("""
        import sys, convkit, numpy as np
        convkit.convolve(np.ones(5), np.ones(3))
        convkit.dispatch.array_owner(object())
        loaded = [m for m in ("jax", "cupy", "torch") if m in sys.modules]
        assert not loaded, loaded
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

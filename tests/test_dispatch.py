"""Backend selection (SPEC S12), the backend registry and plugins, device-input rules (S11).

A fake third-party backend (a NumPy backend that records each call) shows which backend
actually ran a call; its results are checked against ``numpy.convolve``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import convkit
from convkit import dispatch
from convkit.backends.numpy import NumpyBackend

X = [1, 2, 3, 4]
K = [1, 10, 100]
EXPECTED = np.convolve(X, K).tolist()  # independent oracle (S2 'full' = np.convolve 'full')


class Recorder(NumpyBackend):
    """A third-party backend: NumPy arithmetic, but it records which thread called it."""

    def __init__(self, name: str, ok: bool = True, reason: str = "", hint: str = ""):
        self.name = name
        self._ok, self._reason = ok, reason
        self.install_hint = hint
        self.calls: list[int] = []

    def available(self):
        return self._ok, self._reason

    def execute(self, plan, in1, in2):
        self.calls.append(threading.get_ident())
        return super().execute(plan, in1, in2)


@pytest.fixture
def register(monkeypatch):
    """Register backends through the public API; the registry is restored afterwards."""

    def _register(name: str, backend):
        monkeypatch.setitem(dispatch._registry, name, None)  # remembers "absent" for teardown
        convkit.register_backend(name, backend)
        return backend

    yield _register
    monkeypatch.undo()
    dispatch.reload_environment()


@pytest.fixture
def fakes(register):
    """Four available fake backends, one per selection level."""
    return {n: register(n, Recorder(n)) for n in ("arg", "ctx", "proc", "env")}


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)


def ran(fakes) -> list[str]:
    return [n for n, b in fakes.items() if b.calls]


def call(**kw):
    out = convkit.convolve(X, K, **kw)
    assert out.tolist() == EXPECTED
    return out


# ----------------------------------------------------------------------------- precedence (S12)


def test_precedence_levels_2_to_6(fakes, monkeypatch):
    # S12: backend= > use_backend > set_backend > CONVKIT_BACKEND > numpy
    monkeypatch.setenv(dispatch.ENV_VAR, "env")
    convkit.set_backend("proc")
    with convkit.use_backend("ctx"):
        call(backend="arg")
        assert ran(fakes) == ["arg"]
        call()
        assert ran(fakes) == ["arg", "ctx"]
    call()
    assert ran(fakes) == ["arg", "ctx", "proc"]
    convkit.set_backend(None)
    call()
    assert ran(fakes) == ["arg", "ctx", "proc", "env"]
    monkeypatch.delenv(dispatch.ENV_VAR)
    dispatch.reload_environment()
    before = {n: len(b.calls) for n, b in fakes.items()}
    call()
    assert {n: len(b.calls) for n, b in fakes.items()} == before  # level 6: built-in numpy


def test_default_is_numpy(no_env):
    # S12 level 6
    be, host = dispatch.resolve_backend(np.ones(3), np.ones(2))
    assert be is convkit.get_backend("numpy") and be.name == "numpy" and host


def test_backend_argument_accepts_an_object(no_env):
    # S12 level 2: a backend object that was never registered
    rec = Recorder("unregistered")
    with convkit.use_backend("numpy"):
        call(backend=rec)
    assert len(rec.calls) == 1


def test_backend_argument_is_case_insensitive(fakes, no_env):
    call(backend=" ARG ")
    assert ran(fakes) == ["arg"]


def test_register_name_case_insensitive(register, no_env):
    rec = register("MyBackend", Recorder("mybackend"))
    call(backend="mybackend")
    call(backend="MyBackend")
    assert len(rec.calls) == 2


def test_register_factory_and_class(register, no_env):
    built = []

    def factory():
        built.append(Recorder("factory"))
        return built[-1]

    register("factory", factory)
    call(backend="factory")
    call(backend="factory")
    assert len(built) == 1 and len(built[0].calls) == 2  # built once, reused

    class Plugin(NumpyBackend):
        name = "cls"
        calls = 0

        def execute(self, plan, in1, in2):
            type(self).calls += 1
            return super().execute(plan, in1, in2)

    register("cls", Plugin)
    call(backend="cls")
    assert Plugin.calls == 1


def test_bad_backend_argument():
    with pytest.raises(convkit.ConvkitValueError, match=r"backend='nope' is not a known backend.*'numpy'"):
        convkit.convolve(X, K, backend="nope")
    with pytest.raises(convkit.ConvkitTypeError, match=r"backend=3 is not accepted"):
        convkit.convolve(X, K, backend=3)
    with pytest.raises(convkit.ConvkitTypeError, match="non-empty string"):
        convkit.register_backend("", Recorder("x"))


def test_no_registered_backend_says_convkit_is_not_installed(monkeypatch):
    """A Python that imports convkit from a checkout without its package metadata sees no entry
    points: the error says so instead of listing an empty set of names."""
    monkeypatch.setattr(dispatch, "_registry", {})
    monkeypatch.setattr(dispatch, "_entry_points_scanned", True)
    with pytest.raises(convkit.ConvkitValueError, match=r"no backend is registered.*pip install -e \."):
        convkit.get_backend("numpy")


def test_set_backend_validates_and_clears(fakes, no_env):
    with pytest.raises(convkit.ConvkitValueError, match="not a known backend"):
        convkit.set_backend("nope")
    convkit.set_backend("proc")
    call()
    convkit.set_backend(None)
    call()
    assert len(fakes["proc"].calls) == 1


def test_use_backend_restores_on_exception(fakes, no_env):
    with pytest.raises(RuntimeError):
        with convkit.use_backend("ctx") as be:
            assert be is fakes["ctx"]
            raise RuntimeError
    call()
    assert ran(fakes) == []


def test_use_backend_nests(fakes, no_env):
    with convkit.use_backend("ctx"):
        with convkit.use_backend("arg"):
            call()
        call()
    assert [len(fakes["arg"].calls), len(fakes["ctx"].calls)] == [1, 1]


# ----------------------------------------------------------------------------- unavailable backends


def test_unavailable_backend_raises_with_reason_and_hint(register, no_env):
    register("gpu", Recorder("gpu", ok=False, reason="no CUDA device", hint="pip install gpu-thing"))
    for select in (lambda: call(backend="gpu"), lambda: convkit.set_backend("gpu"),
                   lambda: convkit.use_backend("gpu").__enter__()):
        with pytest.raises(convkit.BackendUnavailableError,
                           match=r"'gpu'.*no CUDA device.*pip install gpu-thing"):
            select()
    assert issubclass(convkit.BackendUnavailableError, ImportError)
    assert issubclass(convkit.BackendUnavailableError, convkit.ConvkitError)
    call()  # no silent fallback happened, and the default still works


def test_builtin_that_cannot_load_gives_install_hint(monkeypatch):
    # a built-in whose module fails to import (e.g. a broken install): reason + how to install
    monkeypatch.setitem(dispatch._registry, "jax", "convkit_no_such_module_for_test")
    with pytest.raises(convkit.BackendUnavailableError, match=r"'jax'.*ModuleNotFoundError.*pip install"):
        convkit.convolve(X, K, backend="jax")


def test_broken_backends_are_reported_not_fatal(register, no_env):
    class Raises(NumpyBackend):
        name = "raises"

        def available(self):
            raise OSError("libcudart.so.12: cannot open shared object file")

    class NotABackend:
        pass

    register("badimport", "convkit_no_such_module_for_test")
    register("raises", Raises())
    register("notabackend", NotABackend())

    def failing_factory():
        raise RuntimeError("driver exploded")

    register("badfactory", failing_factory)
    rows = {r.name: r for r in convkit.list_backends()}
    assert not rows["badimport"].available and "ModuleNotFoundError" in rows["badimport"].reason
    assert not rows["raises"].available and "OSError" in rows["raises"].reason
    assert "libcudart" in rows["raises"].reason
    assert not rows["notabackend"].available and "contract" in rows["notabackend"].reason
    assert not rows["badfactory"].available and "driver exploded" in rows["badfactory"].reason
    assert rows["numpy"].available
    for name in ("badimport", "raises", "notabackend", "badfactory"):
        with pytest.raises(convkit.BackendUnavailableError, match=name):
            convkit.convolve(X, K, backend=name)
    call()


# ----------------------------------------------------------------------------- list_backends


def test_list_backends_rows(register):
    register("gpu", Recorder("gpu", ok=False, reason="no CUDA device"))
    rows = convkit.list_backends()
    assert all(isinstance(r, convkit.BackendInfo) for r in rows)
    names = [r.name for r in rows]
    assert names[0] == "numpy" and {"numpy", "cupy", "jax", "gpu"} <= set(names)
    assert len(names) == len(set(names))
    numpy_row = rows[0]
    assert (numpy_row.available, numpy_row.reason) == (True, "")
    gpu = rows[names.index("gpu")]
    assert (gpu.available, gpu.reason, gpu.source) == (False, "no CUDA device", "registered object")
    assert "unavailable: no CUDA device" in str(gpu) and "available" in str(numpy_row)
    for r in rows:  # every unavailable row says why
        assert r.available or r.reason


# ----------------------------------------------------------------------------- CONVKIT_BACKEND


@pytest.mark.parametrize("value", [None, "", "   ", " , "])
def test_env_unset_or_empty_means_default(value, fakes, monkeypatch):
    if value is None:
        monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(dispatch.ENV_VAR, value)
    be, _ = dispatch.resolve_backend(X, K)
    assert be.name == "numpy"
    call()
    assert ran(fakes) == []


@pytest.mark.parametrize("value", ["env", " ENV ", "env,numpy", "numpy , env"])
def test_env_name_and_list(value, fakes, monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, value)
    be, _ = dispatch.resolve_backend(X, K)
    assert be.name == value.split(",")[0].strip().lower()


def test_env_list_skips_unavailable(fakes, register, monkeypatch):
    register("gpu1", Recorder("gpu1", ok=False, reason="no CUDA device"))
    register("gpu2", Recorder("gpu2", ok=False, reason="CUDA libraries missing"))
    monkeypatch.setenv(dispatch.ENV_VAR, "gpu1,gpu2,env,proc")
    call()
    assert ran(fakes) == ["env"]


def test_env_unknown_name_is_value_error(fakes, monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "env,nope")  # unknown anywhere in the list
    with pytest.raises(convkit.ConvkitValueError, match=r"CONVKIT_BACKEND='env,nope'.*'nope'"):
        call()
    assert isinstance(convkit.ConvkitValueError("x"), ValueError)
    assert ran(fakes) == []


def test_env_none_available(register, monkeypatch):
    register("gpu1", Recorder("gpu1", ok=False, reason="no CUDA device"))
    register("gpu2", Recorder("gpu2", ok=False, reason="CUDA libraries missing"))
    monkeypatch.setenv(dispatch.ENV_VAR, "gpu1, gpu2")
    with pytest.raises(convkit.BackendUnavailableError,
                       match=r"CONVKIT_BACKEND.*gpu1: no CUDA device; gpu2: CUDA libraries missing"):
        call()


def test_env_read_once_until_reload(fakes, monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "env")
    call()
    monkeypatch.setenv(dispatch.ENV_VAR, "proc")
    call()  # cached at first use
    assert len(fakes["env"].calls) == 2 and not fakes["proc"].calls
    dispatch.reload_environment()
    call()
    assert len(fakes["proc"].calls) == 1


def test_env_read_at_first_use_not_import():
    # S12: an invalid value does not break `import convkit`; it is read when a call needs it
    code = textwrap.dedent(f"""
        import os
        import convkit
        print("imported")
        try:
            convkit.convolve([1, 2], [1, 1])
        except ValueError as e:
            print("first use:", type(e).__name__, e)
        os.environ[{dispatch.ENV_VAR!r}] = "numpy"
        convkit.dispatch.reload_environment()
        print(convkit.convolve([1, 2], [1, 1]).tolist())
    """)
    env = {**os.environ, dispatch.ENV_VAR: "not-a-backend"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "imported"
    assert lines[1].startswith("first use: ConvkitValueError") and "CONVKIT_BACKEND" in lines[1]
    assert lines[2] == "[1, 3, 2]"

    # and the other way round: set after import, honoured at first use
    code2 = textwrap.dedent(f"""
        import os
        import convkit
        os.environ[{dispatch.ENV_VAR!r}] = "not-a-backend"
        try:
            convkit.convolve([1, 2], [1, 1])
        except ValueError as e:
            print("raised", {dispatch.ENV_VAR!r} in str(e))
    """)
    env2 = {k: v for k, v in os.environ.items() if k != dispatch.ENV_VAR}
    res2 = subprocess.run([sys.executable, "-c", code2], env=env2, capture_output=True, text=True,
                          timeout=120)
    assert res2.stdout.strip() == "raised True", res2.stderr


# ----------------------------------------------------------------------------- isolation


def test_use_backend_is_per_thread(register, no_env):
    names = [f"t{i}" for i in range(4)]
    recs = {n: register(n, Recorder(n)) for n in names}
    barrier = threading.Barrier(len(names) + 1)
    errors: list[BaseException] = []
    idents: dict[str, int] = {}

    def work(name):
        try:
            idents[name] = threading.get_ident()
            with convkit.use_backend(name):
                barrier.wait(timeout=30)  # every thread is inside its own context now
                for _ in range(3):
                    call()
                barrier.wait(timeout=30)
            call()  # outside its context: the default again
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    barrier.wait(timeout=30)
    be, _ = dispatch.resolve_backend(X, K)  # the main thread is not affected by the others
    assert be.name == "numpy"
    barrier.wait(timeout=30)
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    for n in names:
        assert recs[n].calls == [idents[n]] * 3


def test_set_backend_is_process_wide(fakes, no_env):
    t = threading.Thread(target=convkit.set_backend, args=("proc",))
    t.start()
    t.join()
    call()
    assert ran(fakes) == ["proc"]


def test_use_backend_is_per_asyncio_task(register, no_env):
    recs = {n: register(n, Recorder(n)) for n in ("a1", "a2")}
    seen: dict[str, list[str]] = {"a1": [], "a2": [], "plain": []}

    async def task(name):
        if name == "plain":
            for _ in range(3):
                seen[name].append(dispatch.resolve_backend(X, K)[0].name)
                await asyncio.sleep(0)
            return
        with convkit.use_backend(name):
            for _ in range(3):
                await asyncio.sleep(0)  # the other tasks run in between
                seen[name].append(dispatch.resolve_backend(X, K)[0].name)
                call()

    async def main():
        await asyncio.gather(task("a1"), task("a2"), task("plain"))

    asyncio.run(main())
    assert seen == {"a1": ["a1"] * 3, "a2": ["a2"] * 3, "plain": ["numpy"] * 3}
    assert [len(recs["a1"].calls), len(recs["a2"].calls)] == [3, 3]


# ----------------------------------------------------------------------- device inputs (S11, S12 level 1)


class FakeDeviceArray:
    """A device array of a third-party backend (wraps NumPy data, has shape and dtype)."""

    def __init__(self, data):
        self.data = np.asarray(data)
        self.shape, self.dtype = self.data.shape, self.data.dtype


class FakeDevice(NumpyBackend):
    name = "fakedev"
    device = True

    def __init__(self):
        self.calls = 0

    def owns(self, x):
        return isinstance(x, FakeDeviceArray)

    def asarray(self, x):
        return x if isinstance(x, FakeDeviceArray) else FakeDeviceArray(x)

    def to_host(self, x):
        return x.data if isinstance(x, FakeDeviceArray) else np.asarray(x)

    def execute(self, plan, in1, in2):
        self.calls += 1
        unwrap = [v.data if isinstance(v, FakeDeviceArray) else np.asarray(v) for v in (in1, in2)]
        return FakeDeviceArray(super().execute(plan, *unwrap))


def test_device_inputs_pick_their_backend(fakes, register, monkeypatch):
    dev = register("fakedev", FakeDevice())
    monkeypatch.setenv(dispatch.ENV_VAR, "env")
    convkit.set_backend("proc")
    with convkit.use_backend("ctx"):
        out = convkit.convolve(FakeDeviceArray(X), FakeDeviceArray(K))
        # S11: device in, device out
        assert isinstance(out, FakeDeviceArray) and out.data.tolist() == EXPECTED
        out = convkit.convolve(FakeDeviceArray(X), K)  # one device input is enough
        assert out.data.tolist() == EXPECTED
        out = convkit.convolve(FakeDeviceArray(X), K, backend="fakedev")  # agreeing backend= is fine
        assert out.data.tolist() == EXPECTED
    assert dev.calls == 3 and ran(fakes) == []
    # host inputs on a device backend come back as NumPy (S11)
    host = convkit.convolve(X, K, backend="fakedev")
    assert isinstance(host, np.ndarray) and host.tolist() == EXPECTED


def test_device_input_conflicting_backend_argument(fakes, register, no_env):
    register("fakedev", FakeDevice())
    with pytest.raises(convkit.DeviceMismatchError,
                       match=r"backend='arg' conflicts with fakedev array inputs"):
        convkit.convolve(FakeDeviceArray(X), K, backend="arg")
    with pytest.raises(TypeError):  # DeviceMismatchError is a TypeError (S13)
        convkit.correlate(X, FakeDeviceArray(K), backend="numpy")
    assert ran(fakes) == []


def test_mixed_device_namespaces(register, no_env):
    register("fakedev", FakeDevice())

    class Other(FakeDevice):
        name = "otherdev"

        def owns(self, x):
            return isinstance(x, OtherArray)

    class OtherArray:
        def __init__(self, data):
            self.data = np.asarray(data)
            self.shape, self.dtype = self.data.shape, self.data.dtype

    register("otherdev", Other())
    with pytest.raises(convkit.DeviceMismatchError, match=r"in1 is a fakedev array and in2 a otherdev array"):
        convkit.convolve(FakeDeviceArray(X), OtherArray(K))


def test_mixed_jax_and_third_party_device_arrays(register, no_env):
    jnp = pytest.importorskip("jax.numpy")
    register("fakedev", FakeDevice())
    assert dispatch.array_owner(jnp.ones(3)) == "jax"
    with pytest.raises(convkit.DeviceMismatchError, match=r"jax array and in2 a fakedev array.*asarray"):
        convkit.convolve(jnp.ones(3), FakeDeviceArray(K))


def test_array_owner_asks_the_last_owner_of_the_type_first(register, no_env):
    """S12 by array type, with the owner of the last array of a type remembered: it is asked
    first, and its answer is never taken without asking (an ``owns`` that looks past the
    type still decides), and a registration forgets it."""

    class Picky(FakeDevice):
        name = "picky"

        def owns(self, x):
            return isinstance(x, FakeDeviceArray) and getattr(x, "mine", True)

    register("picky", Picky())
    mine, other = FakeDeviceArray(X), FakeDeviceArray(X)
    other.mine = False
    assert dispatch.array_owner(mine) == "picky"
    assert dispatch._owner_of_type[FakeDeviceArray] == "picky"
    assert dispatch.array_owner(other) is None  # asked, refused: every backend asked, none owns it
    assert dispatch.array_owner(mine) == "picky"
    register("fakedev", FakeDevice())
    assert FakeDeviceArray not in dispatch._owner_of_type
    assert dispatch.array_owner(other) == "fakedev"


def test_array_owner_host_data():
    for x in (np.ones(3), np.float32(1), 1, 2.0, 1j, [1, 2], (1, 2)):
        assert dispatch.array_owner(x) is None


def test_owns_that_raises_does_not_break_host_calls(register, no_env):
    class Grumpy(NumpyBackend):
        name = "grumpy"

        def owns(self, x):
            raise RuntimeError("boom")

    register("grumpy", Grumpy())

    class HostLike:  # not a NumPy array, so owns() is consulted
        def __array__(self, dtype=None, copy=None):
            return np.asarray(X)

    assert convkit.convolve(HostLike(), K).tolist() == EXPECTED


# ----------------------------------------------------------------------------- entry points


PLUGIN = '''
import numpy as np
from convkit.backends.numpy import NumpyBackend

class PlugBackend(NumpyBackend):
    name = "plug"
    calls = 0

    def execute(self, plan, in1, in2):
        type(self).calls += 1
        return super().execute(plan, in1, in2)

class Offline(NumpyBackend):
    name = "offline"
    install_hint = "pip install offline-plugin"

    def available(self):
        return False, "no offline device"
'''


def _make_plugin(tmp_path):
    """A real installed distribution (dist-info + entry_points.txt) on sys.path."""
    (tmp_path / "ck_plugin_mod.py").write_text(PLUGIN)
    (tmp_path / "ck_broken_mod.py").write_text("raise ImportError('needs libfoo.so')\n")
    info = tmp_path / "ck_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ck-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[convkit.backends]\n"
        "plug = ck_plugin_mod:PlugBackend\n"
        "offline = ck_plugin_mod:Offline\n"
        "broken = ck_broken_mod:backend\n"
    )


def _run_with_plugin(tmp_path, code, **env):
    base = {k: v for k, v in os.environ.items() if k != dispatch.ENV_VAR}
    path = os.pathsep.join([str(tmp_path)] + [p for p in [base.get("PYTHONPATH")] if p])
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env={**base, "PYTHONPATH": path, **env}, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_entry_point_plugins(tmp_path):
    _make_plugin(tmp_path)
    out = _run_with_plugin(tmp_path, """
        import sys
        import convkit
        assert "ck_plugin_mod" not in sys.modules          # registration imports nothing
        rows = {r.name: r for r in convkit.list_backends()}
        print(rows["plug"].available, rows["plug"].source)
        print(rows["offline"].available, rows["offline"].reason)
        print(rows["broken"].available, rows["broken"].reason)
        print(convkit.convolve([1, 2, 3, 4], [1, 10, 100], backend="plug").tolist())
        from ck_plugin_mod import PlugBackend
        print(PlugBackend.calls)
        try:
            convkit.convolve([1, 2], [1], backend="offline")
        except convkit.BackendUnavailableError as e:
            print("unavailable:", e)
        print(convkit.convolve([1, 2], [1, 1]).tolist())   # the broken plugin does not break convkit
    """).splitlines()
    assert out[0] == "True entry point ck_plugin_mod:PlugBackend"
    assert out[1] == "False no offline device"
    assert out[2].startswith("False failed to load (ImportError: needs libfoo.so")
    assert out[3] == str(EXPECTED)
    assert out[4] == "1"
    assert "no offline device" in out[5] and "pip install offline-plugin" in out[5]
    assert out[6] == "[1, 3, 2]"


def test_entry_point_plugin_from_env(tmp_path):
    _make_plugin(tmp_path)
    out = _run_with_plugin(tmp_path, """
        import convkit
        print(convkit.convolve([1, 2, 3, 4], [1, 10, 100]).tolist())
        from ck_plugin_mod import PlugBackend
        print(PlugBackend.calls)
    """, CONVKIT_BACKEND="offline,broken,plug").splitlines()
    assert out == [str(EXPECTED), "1"]

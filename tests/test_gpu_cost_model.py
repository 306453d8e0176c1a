"""Issue 12, GPU cost model: a memory-traffic term, per-platform constants, the device tuner
(JAX on its CPU device for real, CuPy through the emulated backend) and the cupyx ndimage peer.
Timings are never asserted: only structure, round trips and that apply() takes effect."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import convkit
import convkit.tune
from convkit.choose import GPU_REFERENCE, Capabilities, PlatformCapabilities, method_costs

GEOM = dict(out_shape=(512, 512), x_shape=(512, 512), k_shape=(15, 15), axes=(0, 1),
            pads=((7, 7), (7, 7)), dilation=(1, 1))


def test_c_mem_defaults_to_zero_and_adds_traffic():
    base = Capabilities()
    assert base.c_mem == 0.0 and base.direct_fill == 0
    costs = method_costs(caps=base, dtype=np.float64, **GEOM)
    more = method_costs(caps=dataclasses.replace(base, c_mem=1e-12), dtype=np.float64, **GEOM)
    assert all(more[m] > costs[m] for m in costs)
    # bytes scale with the item size
    single = method_costs(caps=dataclasses.replace(base, c_mem=1e-12, single_fft=1.0), dtype=np.float32,
                          **GEOM)
    assert more["fft"] - costs["fft"] == pytest.approx(2 * (single["fft"] - costs["fft"]), rel=1e-9)


def test_gpu_constants_from_published_figures():
    caps = Capabilities.from_gpu_figures()
    assert caps.c_mem == pytest.approx(1 / (GPU_REFERENCE["bandwidth"] * GPU_REFERENCE["bandwidth_eff"]))
    assert caps.c_out == 0.0 and caps.c_mem > 0 and caps.single_fft < 0.6 and caps.single_direct < 1.0
    slower = Capabilities.from_gpu_figures({"bandwidth": GPU_REFERENCE["bandwidth"] / 2})
    assert slower.c_mem == pytest.approx(2 * caps.c_mem)
    # big kernel on a big image: FFT; small kernel: direct
    costs = method_costs(caps=caps, dtype=np.float32, out_shape=(2048, 2048), x_shape=(2048, 2048),
                         k_shape=(31, 31), axes=(0, 1), pads=((15, 15), (15, 15)), dilation=(1, 1))
    assert costs["fft"] < costs["direct"]
    costs = method_costs(caps=caps, dtype=np.float32, out_shape=(2048, 2048), x_shape=(2048, 2048),
                         k_shape=(3, 3), axes=(0, 1), pads=((1, 1), (1, 1)), dilation=(1, 1))
    assert costs["direct"] < costs["fft"]


def test_cupy_uses_gpu_constants():
    from convkit.backends.cupy import H200_MEASURED, CupyBackend

    assert CupyBackend.capabilities == Capabilities.from_gpu_figures(methods=("direct", "fft"),
                                                                     direct_int_ops=16.0, **H200_MEASURED)


#: float32 'same' calls timed on an NVIDIA H200 with CuPy 14.2 (docs/gpu.md, "Measured on an H200"):
#: input shape, kernel shape, microseconds with method='direct' and with method='fft'
H200_TIMES = [((100_000,), (16,), 236, 357), ((100_000,), (4096,), 569, 277), ((500, 500), (3, 3), 280, 597),
              ((500, 500), (15, 15), 277, 475), ((256, 256), (63, 63), 580, 361),
              ((2048, 2048), (7, 7), 288, 402), ((2048, 2048), (31, 31), 3079, 426),
              ((64, 64, 64), (3, 3, 3), 182, 417), ((64, 64, 64), (7, 7, 7), 462, 827),
              ((128, 128, 128), (9, 9, 9), 1031, 446)]


@pytest.mark.parametrize("x_shape, k_shape, t_direct, t_fft", H200_TIMES)
def test_cupy_constants_pick_what_was_faster_on_an_h200(x_shape, k_shape, t_direct, t_fft):
    """The CuPy backend's constants send each measured call to the method that was faster on the
    GPU (the data-sheet constants sent the 500x500 15x15, 2048x2048 7x7 and 7x7x7 rows to the FFT)."""
    from convkit.backends.cupy import CupyBackend
    from convkit.plan import plan_call

    f32 = np.float32
    plan = plan_call("convolve", np.empty(x_shape, f32), np.empty(k_shape, f32), CupyBackend.capabilities,
                     mode="same")
    assert plan.method == ("direct" if t_direct < t_fft else "fft")


def test_platform_capabilities_descriptor():
    cpu, gpu = Capabilities(c_direct=1.0), Capabilities(c_direct=2.0)

    class Be:
        capabilities = PlatformCapabilities(cpu, gpu=gpu)
        platform = "cpu"

        def cost_platform(self):
            return self.platform

    be = Be()
    assert Be.capabilities is cpu and be.capabilities is cpu
    be.platform = "gpu"
    assert be.capabilities is gpu
    tuned = Capabilities(c_direct=3.0)
    be.capabilities = tuned  # replaces the current platform's only
    assert be.capabilities is tuned
    be.platform = "cpu"
    assert be.capabilities is cpu
    be.platform = "tpu"
    assert be.capabilities is cpu  # unknown platform: the default set


def test_jax_capabilities_per_platform(monkeypatch):
    jb = pytest.importorskip("convkit.backends.jax")
    be = jb.backend
    monkeypatch.setattr(be, "_cost_platform", "cpu")  # JAX's default device may be a GPU
    assert be.capabilities is jb.JaxBackend.capabilities  # CPU: exactly the constants of before
    monkeypatch.setattr(be, "_cost_platform", "gpu")
    gpu = be.capabilities
    assert gpu.c_mem > 0 and gpu != jb.JaxBackend.capabilities and "oa" in gpu.methods


# ----------------------------------------------------------------------------- the device tuner

def _check_tuned(caps: Capabilities, shipped: Capabilities):
    assert isinstance(caps, Capabilities) and caps.methods == shipped.methods
    for name in ("c_direct", "c_direct_1d", "c_fft", "c_mem", "c_sep", "fft_call", "single_direct",
                 "single_fft"):
        v = getattr(caps, name)
        assert isinstance(v, float) and np.isfinite(v) and v > 0, name
    assert caps.c_out == 0.0


def test_tune_jax_default_device_round_trip(tmp_path, monkeypatch):
    jb = pytest.importorskip("convkit.backends.jax")
    monkeypatch.setenv("HOME", str(tmp_path))
    be = convkit.get_backend("jax")
    shipped = be.capabilities
    caps = convkit.tune.tune(apply=False, backend="jax", size=48, repeats=1)
    _check_tuned(caps, shipped)
    if be.cost_platform() == "cpu":  # the CPU handoff's fixed cost, measured by the backend
        assert isinstance(caps.handoff_call, float) and 0 < caps.handoff_call < 0.05
    else:
        assert caps.handoff_call is None
    assert be.capabilities is shipped
    path = convkit.tune.save(caps, backend="jax")
    dev = convkit.tune.device_name("jax")
    assert path.endswith(f"tune-jax-{dev}.json") and dev.startswith(be.cost_platform())  # cpu-..., gpu-...
    data = json.load(open(path))
    assert data["_backend"] == "jax" and data["_device"] == dev
    assert convkit.tune.load(backend="jax") == caps
    monkeypatch.setattr(be, "_capabilities_by_platform", {}, raising=False)  # undone after the test
    convkit.tune.apply(convkit.tune.load(backend="jax"), backend="jax")
    assert be.capabilities == caps and jb.JaxBackend.capabilities == shipped


@pytest.fixture
def emulated_cupy():
    import cupy_emulated  # registered by conftest.py

    return convkit.get_backend(cupy_emulated.NAME)


def test_tune_cupy_emulated_round_trip(emulated_cupy, tmp_path, monkeypatch):
    be = emulated_cupy
    shipped = be.capabilities
    caps = convkit.tune.tune(apply=False, backend=be.name, size=40, repeats=1)
    _check_tuned(caps, shipped)
    path = convkit.tune.save(caps, str(tmp_path / "t.json"), backend=be.name, device="emu")
    assert json.load(open(path))["_device"] == "emu"
    assert convkit.tune.load(path) == caps
    assert convkit.tune.default_path(be.name, "emu").endswith(f"tune-{be.name}-emu.json")
    monkeypatch.setattr(be, "capabilities", shipped)  # restored after the test
    convkit.tune.apply(caps, backend=be.name)
    assert be.capabilities == caps != shipped


def test_cli_tune_backend(capsys, monkeypatch, tmp_path):
    from convkit import cli

    shipped = convkit.get_backend("jax").capabilities
    measured = dataclasses.replace(shipped, c_mem=1e-12, c_out=0.0)
    seen = {}

    def fake(**kw):
        seen.update(kw)
        return measured

    monkeypatch.setattr(convkit.tune, "tune", fake)
    path = tmp_path / "j.json"
    assert cli.main(["tune", "--backend", "jax", "--save", str(path)]) == 0
    out = capsys.readouterr().out
    assert seen["backend"] == "jax" and "c_mem" in out and "backend='jax'" in out
    assert convkit.tune.load(str(path)) == measured


# ----------------------------------------------------------------------------- the ndimage peer

@pytest.mark.parametrize("x_shape,k_shape,axes", [
    ((31,), (4,), None), ((31,), (5,), None), ((20, 17), (4, 3), None), ((20, 17), (6, 6), None),
    ((9, 20, 17), (1, 4, 5), None), ((9, 20), (3,), (1,)), ((6, 8, 10), (2, 3, 4), None),
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ndimage_same_mapping(x_shape, k_shape, axes, dtype):
    """The cupyx.scipy.ndimage.convolve peer's arguments, checked with scipy.ndimage (the same
    signature and centring) against SciPy's 'same'."""
    import scipy.ndimage
    import scipy.signal

    from benchmarks.contenders import ndimage_same
    from benchmarks.workloads import Workload

    w = Workload("t", "g", x_shape, k_shape, "same", axes)
    x, k = w.make(dtype)
    kk, origin = ndimage_same(w, x, k)
    got = scipy.ndimage.convolve(x, kk, mode="constant", origin=origin)
    want = scipy.signal.convolve(x.astype(np.float64), w.k_full(k).astype(np.float64), "same")
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-4)


def test_ndimage_same_refuses_other_computations():
    from benchmarks.contenders import ndimage_same
    from benchmarks.workloads import Workload

    x = np.zeros((10, 10))
    assert ndimage_same(Workload("t", "g", (10, 10), (3, 3), "full"), x, np.ones((3, 3))) is None
    assert ndimage_same(Workload("t", "g", (10, 10), (3, 3), "same"), x.astype(int), np.ones((3, 3),
                                                                                               int)) is None
    assert ndimage_same(Workload("t", "g", (10, 10), (12, 3), "same"), x, np.ones((12, 3))) is None


def test_cupy_ndimage_peer_listed():
    from benchmarks.contenders import contenders

    names = [c.name for c in contenders([], ["cupy"])]
    assert "cupyx.scipy.ndimage.convolve" in names

"""JAX backend: separable kernels under ``method="auto"`` (S5, S8, S9, S14).

Under ``jit`` the kernel's values are unknown when the plan is made, so the JAX backend
decides at run time (a ``lax.cond``) between one 1-D pass per axis (kernel rank 1 to
rounding, finite data) and the plan's method. Oracles: ``tests/reference.py`` (exact) and
NumPy's own rank-1 test, :func:`convkit.backends.numpy.separable_factors`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import convkit
from convkit.testing import assert_conv_close

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

from reference import gaussian_kernel, reference  # noqa: E402

from convkit.backends import jax as jb  # noqa: E402
from convkit.backends import numpy as npb  # noqa: E402

_gauss = gaussian_kernel


@pytest.fixture
def cheap_separable(monkeypatch):
    """Make the separable passes the cheapest wherever they are allowed, and the fallback
    (the plan's method) of ``auto`` calls return NaN everywhere, so a result shows which
    branch ran (explicit methods are untouched)."""
    caps = dataclasses.replace(jb.JaxBackend.capabilities, c_sep=1e-30, c_out=0.0)
    monkeypatch.setattr(jb.JaxBackend, "capabilities", caps)
    planned = jb.JaxBackend._planned

    def fallback(self, plan, platform, x, w):
        if plan.requested_method != "auto":
            return planned(self, plan, platform, x, w)
        return jnp.full(plan.out_shape, jnp.nan, dtype=plan.acc_dtype)

    monkeypatch.setattr(jb.JaxBackend, "_planned", fallback)
    jb._FUNCTIONS.clear()
    yield
    jb._FUNCTIONS.clear()


@pytest.mark.parametrize("kw", [
    dict(mode="same"),
    dict(mode="full"),
    dict(mode="valid"),
    dict(mode="same", boundary="reflect"),
    dict(mode="same", boundary="wrap", stride=(2, 3)),
    dict(mode="same", boundary="symm", dilation=(2, 1), align="tf"),
    dict(mode="same", boundary="nearest", stride=2),
    dict(mode=((3, -1), (0, 4))),                       # explicit pads, one cropping
])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_separable_branch_matches_reference(kw, dtype, cheap_separable, rng):
    """S5: the 1-D passes are within the direct bound of the exact result for every boundary,
    stride, dilation and pad; the fallback (NaN here) did not run."""
    a = rng.standard_normal((23, 30)).astype(dtype)
    k = np.outer(_gauss(5, ndim=1), [0.5, -1.0, 2.0, 1.0]).astype(dtype)
    with jax.enable_x64(dtype == "float64"):
        got = jax.jit(lambda x, y: convkit.convolve(x, y, **kw))(jnp.asarray(a), jnp.asarray(k))
    got = np.asarray(got)
    assert np.all(np.isfinite(got))
    assert_conv_close(got, reference("convolve", a, k, **kw), a, k, method="direct",
                      check_dtype=False, **kw)


def test_separable_branch_3d_and_batch_axes(cheap_separable, rng):
    """Three passes for a 3-D kernel; a batch axis of ``x`` outside ``axes`` is carried along."""
    a = rng.standard_normal((9, 10, 11))
    k = _gauss(5, ndim=3)
    got = np.asarray(convkit.correlate(a, k, "same", backend="jax"))
    assert_conv_close(got, reference("correlate", a, k, "same"), a, k, "correlate", method="direct",
                      check_dtype=False, mode="same")
    x = rng.standard_normal((3, 20, 21))
    k2 = _gauss(7)[None]
    kw = dict(mode="same", axes=(1, 2))
    got = np.asarray(convkit.convolve(x, k2, backend="jax", **kw))
    assert_conv_close(got, reference("convolve", x, k2, **kw), x, k2, method="direct",
                      check_dtype=False, **kw)


def test_not_separable_or_not_finite_takes_the_plan(cheap_separable, rng):
    """The run-time test sends rank-2 kernels, kernels off rank 1 by more than rounding, and
    non-finite data to the plan's method: one compiled function, no re-trace."""
    f = jax.jit(lambda x, y: convkit.convolve(x, y, "same"))
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((30, 30)))
        g = _gauss(7)
        assert np.all(np.isfinite(np.asarray(f(x, jnp.asarray(g)))))
        traces = jb.TRACE_COUNT
        nudged = g.copy()
        nudged[2, 3] *= 1 + 1e-9
        for k in (rng.standard_normal((7, 7)), nudged, np.zeros((7, 7))):
            assert np.all(np.isnan(np.asarray(f(x, jnp.asarray(k)))))
        bad = np.asarray(x).copy()
        bad[4, 5] = np.inf
        assert np.all(np.isnan(np.asarray(f(jnp.asarray(bad), jnp.asarray(g)))))
        assert jb.TRACE_COUNT == traces


def test_rank_one_agrees_with_numpy(rng):
    """The traced rank-1 test decides exactly like NumPy's ``separable_factors``."""
    from convkit.options import make_options
    from convkit.plan import make_plan

    g = _gauss(15)
    nudged = g.copy()
    nudged[3, 4] *= 1 + 1e-9
    hole = g.copy()
    hole[7, 7] = 0.0
    zeros_inside = np.outer([1.0, 0.0, -2.0, 1.0, 0.5], [0.5, 0.0, 3.0, 1.0, 2.0, 1.0, 1.0])
    cases = [g, np.ones((5, 7)), zeros_inside, nudged, hole, rng.standard_normal((15, 15)),
             np.zeros((5, 5)), np.ones((3, 3)), np.outer(np.arange(1.0, 6.0), np.ones(5))]
    with jax.enable_x64(True):
        for w in cases:
            for dtype in (np.float64, np.float32):
                wd = w.astype(dtype)
                d = np.dtype(dtype)
                plan = make_plan("correlate", (40, 40), w.shape, d, d, make_options(mode="same"),
                                 jb.backend.capabilities)
                factors, ok = jb._rank_one(plan, jnp.asarray(wd))
                expected = npb.separable_factors(wd, (0, 1), d) is not None
                if dtype == np.float32 and expected != bool(ok):
                    # the traced test rounds in float32, NumPy's in float64: only a kernel at
                    # the very edge of the tolerance may differ, never a rank-2 one
                    assert w is not cases[5]
                    continue
                assert bool(ok) == expected, (w.shape, dtype)
                if ok:
                    recon = np.multiply.outer(*[np.asarray(f, np.float64) for f in factors])
                    np.testing.assert_allclose(recon, wd, rtol=1e-5 if dtype == np.float32 else 1e-14)


def test_separable_nan_positions_equal_direct(rng):
    """S9 with the real cost model: a big Gaussian goes through the passes, and a NaN/Inf in
    the data puts NaN/Inf exactly where direct does."""
    from convkit.options import make_options
    from convkit.plan import make_plan

    d = np.dtype(np.float64)
    plan = make_plan("convolve", (300, 300), (15, 15), d, d, make_options(mode="same"),
                     jb.backend.capabilities)
    assert jb.separable_pays(plan, jb.backend.capabilities)
    x = rng.standard_normal((300, 300))
    k = _gauss(15)
    exp = reference("convolve", x, k, "same")
    assert_conv_close(convkit.convolve(x, k, "same", backend="jax"), exp, x, k, mode="same")
    x[[10, 200], [20, 150]] = [np.nan, -np.inf]
    got = convkit.convolve(x, k, "same", backend="jax")
    direct = convkit.convolve(x, k, "same", backend="jax", method="direct")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(direct))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(direct))


@pytest.mark.parametrize("mode", ["same", "valid"])
def test_separable_grad_is_the_convolution_gradient(mode, cheap_separable, rng):
    """S14: through the passes, d/dx and d/dk equal the gradients of the direct method (the
    kernel's gradient is the convolution's, not that of the rank-1 factors), and a finite
    difference in a kernel tap off the factors' row and column."""
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((16, 18)))
        k = jnp.asarray(_gauss(5))
        out_shape = convkit.convolve(x, k, mode).shape
        wgt = jnp.asarray(rng.standard_normal(out_shape))

        def loss(method):
            return lambda a, b: jnp.sum(wgt * convkit.convolve(a, b, mode, method=method))

        gx, gk = jax.jit(jax.grad(loss("auto"), argnums=(0, 1)))(x, k)
        assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gk))  # not the NaN fallback
        dx, dk = jax.grad(loss("direct"), argnums=(0, 1))(x, k)
        np.testing.assert_allclose(gx, dx, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gk, dk, rtol=1e-12, atol=1e-14)
        e = np.zeros((5, 5))
        e[0, 4] = 1e-6
        fd = (loss("direct")(x, k + e) - loss("direct")(x, k - e)) / 2e-6
        np.testing.assert_allclose(gk[0, 4], fd, rtol=1e-6)
        gx_only = jax.grad(loss("auto"))(x, k)  # the kernel's tangent is a symbolic zero
        np.testing.assert_allclose(gx_only, dx, rtol=1e-12, atol=1e-14)


def test_separable_under_vmap(cheap_separable, rng):
    """S14: vmap over images with one kernel takes the passes; a batch of kernels with one
    rank-2 member sends the whole batch to the plan's method (one branch, still correct)."""
    x = jnp.asarray(rng.standard_normal((3, 20, 22)), dtype=jnp.float32)
    g = _gauss(5).astype(np.float32)
    got = jax.vmap(lambda a: convkit.convolve(a, jnp.asarray(g), "same"))(x)
    for i in range(3):
        a = np.asarray(x[i])
        assert_conv_close(got[i], reference("convolve", a, g, "same"), a, g, method="direct",
                          check_dtype=False, mode="same")
    ks = jnp.asarray(np.stack([g, g, rng.standard_normal((5, 5)).astype(np.float32)]))
    mixed = jax.vmap(lambda a, b: convkit.convolve(a, b, "same"))(x, ks)
    assert np.all(np.isnan(np.asarray(mixed)))
    same = jax.vmap(lambda a, b: convkit.convolve(a, b, "same"))(x, jnp.asarray(np.stack([g] * 3)))
    assert np.all(np.isfinite(np.asarray(same)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cpu_cost_model_runs_a_large_gaussian_as_passes(dtype, monkeypatch, rng):
    """S14: on XLA:CPU a 15x15 Gaussian on a 512x512 image is cheaper as two 15-tap passes
    than as 225 taps, in float32 as in float64 (``single_sep``: float32 passes cost about a
    third of float64 ones); a 3x3 kernel stays direct. The passes ran (not the 225-tap fallback):
    the fallback is made to return NaN, and the result is within S5 of the exact reference."""
    if jax.devices()[0].platform != "cpu":
        pytest.skip("the CPU cost constants")
    planned = jb.JaxBackend._planned

    def fallback(self, plan, platform, x, w):  # traced either way (lax.cond), run only if chosen
        return jnp.full(plan.out_shape, jnp.nan, dtype=plan.acc_dtype)

    monkeypatch.setattr(jb.JaxBackend, "_planned", fallback)
    jb._FUNCTIONS.clear()
    try:
        x = rng.standard_normal((512, 512)).astype(dtype)
        g = _gauss(15).astype(dtype)
        got = np.asarray(convkit.convolve(x, g, "same", backend="jax"))  # host data: float64 kept
        assert got.dtype == np.dtype(dtype)
        assert_conv_close(got, reference("convolve", x, g, mode="same"), x, g, mode="same", method="auto",
                          check_dtype=False)
        monkeypatch.setattr(jb.JaxBackend, "_planned", planned)
        jb._FUNCTIONS.clear()
        spy = []
        monkeypatch.setattr(jb.JaxBackend, "_separable_or_planned",
                            lambda self, *a: spy.append(1) or planned(self, *a))
        convkit.convolve(x, _gauss(3).astype(dtype), "same", backend="jax")
        assert spy == []
    finally:
        jb._FUNCTIONS.clear()

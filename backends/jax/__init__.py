"""JAX backend: fused multiply-adds or ``lax.conv_general_dilated`` for direct, ``jnp.fft`` for FFT.

What this module adds to the shared code of :mod:`convkit.backends._base`:

* one jitted function per static :class:`~convkit.plan.Plan` (the plan is a hashable static
  argument), so repeated calls with the same shapes and options never re-trace;
* direct on CPU: shifted multiply-adds that XLA fuses into one loop (unrolled up to
  ``_UNROLL_TAPS`` taps, else a ``fori_loop`` over blocks of taps); long 1-D loops are cut into
  pieces that XLA:CPU runs concurrently, where to cut depending on the shapes only. Never
  ``lax.conv_general_dilated`` on CPU: its sums depend on XLA's thread count, and its float64
  kernel reads past its input and can segfault (README). So CPU results are bit-identical
  whatever the number of cores (docs/determinism.md);
* direct on accelerators: the same fused loops up to ``_UNROLL_TAPS`` taps; floats with more
  taps use ``lax.conv_general_dilated`` (cuDNN) with explicit padding,
  ``window_strides``, ``rhs_dilation`` and ``precision`` (``lax.Precision.HIGHEST`` for
  ``precision="highest"``). Non-convolution axes become lax batch dims (kernel shared), feature
  groups (kernel and input paired) or output features (one input, many kernels), so
  broadcasting needs no copy;
* integers and bool are always exact (S5): the multiply-add loops, in the integer type (wrapping
  like NumPy); never a float convolution. An explicit ``method="fft"``/``"oa"`` on integers
  follows the rule of every backend (:func:`convkit.bounds.require_exact_int_fft`): it raises
  ConvkitValueError where a float64 FFT cannot be proven exact, else returns the exact
  integers (computed direct). Traced inputs have no values to check and always get the exact
  result;
* long double inputs or ``dtype=`` (no JAX type) are a ConvkitTypeError before any JAX call;
* complex through ``lax.conv``: four real convolutions (no complex convolution on accelerators);
* ``method="auto"`` chose FFT: the FFT runs under ``lax.cond`` and falls back to direct when
  an input holds NaN or Inf (S9), which works under ``jit``/``vmap``/``grad``;
* eager calls on a CPU (concrete JAX arrays, or host data while JAX's default device is a
  CPU) run on the NumPy backend's engines where the cost model puts them first, and come
  back as JAX arrays without a copy (:mod:`.host`, the CPU handoff);
* host (NumPy) inputs run with ``jax.enable_x64(True)`` for that call only and come back as
  NumPy with the SciPy dtype (S4); JAX inputs keep JAX's types, and a plan that needs a
  64-bit type while ``jax_enable_x64`` is off raises :class:`~convkit.ConvkitTypeError`.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

import numpy as np

from convkit.choose import Capabilities, PlatformCapabilities
from convkit.errors import ConvkitTypeError
from convkit.plan import Plan

from .._base import ArrayBackend, separable_factors, separable_pays, switched_off
from . import host
from ._common import _all_finite, _capabilities, _enable_x64, _jax, _platform
from .conv import ConvMixin
from .direct import _MAX_PIECES, DirectMixin, _interior, _pieces  # noqa: F401 (re-exported for tests)
from .separable import SeparableMixin, _rank_one  # noqa: F401
from .testing import _test_runners
from .transforms import TransformMixin

__all__ = ["JaxBackend", "backend"]

#: number of times a plan function was traced (tests use it to check the jit cache)
TRACE_COUNT = 0



class JaxBackend(ConvMixin, DirectMixin, TransformMixin, SeparableMixin, ArrayBackend):
    """Runs convkit on JAX arrays (CPU, GPU or TPU) and on host data with 64-bit types."""

    name = "jax"
    array_module = "jax"
    install_hint = 'install JAX with `pip install "pyconvkit[jax]"` (see the JAX docs for GPU wheels)'
    device = True
    # seconds per unit of work, float64 (float32 costs ``single_*`` times as much), fitted on a
    # 2-core x86 CPU with XLA:CPU; how they were fitted: docs/performance.md (JAX cost model)
    # On a GPU (JAX's default device is one: host data runs there, and so do most JAX arrays) the
    # constants derived from H100-class figures (docs/gpu.md, "Cost model"): XLA's fused
    # multiply-add loops need ~4 integer ops a tap (the input is padded), FFTs are cuFFT's.
    # ``JaxBackend.capabilities`` (on the class) is the CPU set; an instance picks by platform.
    capabilities = PlatformCapabilities(
        _capabilities(methods=("direct", "fft", "oa"), c_direct=6.4e-11, c_fft=2.4e-10,
                      c_out=9.6e-10, small_direct=50_000, c_direct_1d=8.0e-11,
                      single_direct=0.45, single_fft=0.55, single_direct_1d=1.0,
                      fft_call=1.6e-5, oa_call=1.6e-4, c_sep=2.1e-10, single_sep=0.35,
                      handoff_call=host.HANDOFF_SECONDS),
        gpu=Capabilities.from_gpu_figures(methods=("direct", "fft", "oa"), direct_int_ops=4.0),
    )
    _cost_platform: str | None = None

    def cost_platform(self) -> str:
        """The platform whose cost constants plans use: JAX's default backend (``"cpu"``,
        ``"gpu"``, ``"tpu"``; ``"cpu"`` when JAX cannot start). Cached: it cannot change once
        JAX has started its backends."""
        if self._cost_platform is None:
            try:
                platform = _jax().default_backend()
            except Exception:  # no JAX, no backend: the CPU constants (nothing will run anyway)
                return "cpu"
            self._cost_platform = "gpu" if platform in ("gpu", "cuda", "rocm") else platform
        return self._cost_platform

    @property
    def xp(self):  # type: ignore[override]
        import jax.numpy as jnp

        return jnp

    # -- contract
    def available(self) -> tuple[bool, str]:
        try:
            import jax

            jax.devices()
        except Exception as exc:  # any failure (missing jaxlib, broken plugin) is a reason
            return False, f"jax cannot run here ({type(exc).__name__}: {exc})"
        return True, ""

    def test_runners(self) -> list:
        return _test_runners()

    def owns(self, x: Any) -> bool:
        if "jax" not in sys.modules:
            return False
        from array_api_compat import is_jax_array

        return bool(is_jax_array(x))

    def asarray(self, x: Any):
        import jax.numpy as jnp

        return jnp.asarray(x)

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def sync(self, x: Any) -> None:
        ready = getattr(x, "block_until_ready", None)  # the method: no pytree walk (tiny-call timing)
        if ready is not None:
            ready()
        else:
            _jax().block_until_ready(x)

    def execute(self, plan: Plan, in1, in2):
        _check_jax_dtypes(plan, in1, in2)  # before any JAX call
        if not (self.owns(in1) or self.owns(in2)):
            # host data: 64-bit types preserved for this computation only; NumPy back
            in1, in2 = np.asarray(in1), np.asarray(in2)
            self._check_int_fft(plan, in1, in2)
            if self.cost_platform() == "cpu":  # JAX would compute it on the CPU too (host.py)
                moved = host.host_plan(plan, self._cpu_capabilities(), _host_backend(), adopt=False)
                if moved is not None:
                    out = host.run_on_host(moved, _host_backend(), in1, in2)
                    if not host.needs_check(moved) or _host_backend().all_finite(out):
                        return out
            with _enable_x64():  # (NaN/Inf in a handed-off FFT method's result: XLA's positions, S9)
                fn = _plan_function(self, plan, _platform(in1, in2))
                return np.asarray(fn(in1, in2))
        if not _jax().config.jax_enable_x64:
            _check_32bit(plan)
        self._check_int_fft(plan, in1, in2)
        if host.cpu_arrays(in1, in2):  # eager, on a CPU: perhaps the NumPy backend's engines (host.py)
            moved = host.host_plan(plan, self._cpu_capabilities(), _host_backend(), adopt=True)
            if moved is not None:
                out = host.adoptable(host.run_on_host(moved, _host_backend(), in1, in2, aligned=True))
                if not host.needs_check(moved) or _host_backend().all_finite(out):
                    return host.adopt(out, in1 if self.owns(in1) else in2)
                # NaN/Inf in an FFT method's result: XLA's auto gives XLA's direct positions (S9)
        return _plan_function(self, plan, _platform(in1, in2))(in1, in2)

    def _cpu_capabilities(self) -> Capabilities:
        """The cost constants of XLA:CPU (tuned ones where ``convkit tune`` set them)."""
        if self.cost_platform() == "cpu":
            return self.capabilities
        found = inspect.getattr_static(self, "capabilities")  # the descriptor, not its value
        return found.get(self, "cpu") if isinstance(found, PlatformCapabilities) else self.capabilities

    def measure_engines(self, size: int, best) -> dict:
        """The CPU handoff's fixed cost timed here (``convkit tune --backend jax``; ``best(fn)``
        is its timer): ``{"handoff_call": seconds}`` where eager calls on this platform may hand
        off to the NumPy backend (:mod:`.host`), else nothing."""
        if self.cost_platform() != "cpu" or switched_off(host._ENV):
            return {}
        return {"handoff_call": host.measure(best, side=min(size, 512))}

    def handoff_state(self) -> str:
        """For ``convkit info``: whether eager CPU calls may run on the NumPy backend's engines."""
        if switched_off(host._ENV):
            return f"off ({host._ENV}=0)"
        if self.cost_platform() != "cpu":
            return f"off (JAX's default device is a {self.cost_platform().upper()}; arrays on it stay there)"
        return (f"on: eager 2-D float calls on the CPU run on the NumPy backend and its engines where the "
                f"cost model puts it first; {host._ENV}=0 turns it off")

    def cpu_dispatch_state(self) -> str:
        """For ``convkit info``: whether XLA:CPU runs each computation on a worker thread (JAX's
        default since 0.4.32) or inline, where JAX's default device is a CPU; ``""`` elsewhere
        (another device, or a JAX without the switch)."""
        if self.cost_platform() != "cpu":
            return ""
        try:
            asynchronous = _jax().config.read("jax_cpu_enable_async_dispatch")
        except AttributeError:  # a JAX before 0.4.32: no such flag, and no async dispatch on CPU
            return ""
        if asynchronous:
            return ("async (JAX's default): a computation that is not tiny runs on a worker thread, "
                    "tens of microseconds a call on small inputs; jax.config.update("
                    "'jax_cpu_enable_async_dispatch', False) before JAX's first computation runs them "
                    "inline (docs/backends/jax.md)")
        return "inline (jax_cpu_enable_async_dispatch is off): no thread hop per call"

    def host_handoff(self, plan: Plan) -> str | None:
        """For ``convkit.explain``: a sentence on where an eager CPU call of ``plan`` runs when
        the NumPy backend's engines are estimated faster (:mod:`.host`), else ``None``."""
        if self.cost_platform() != "cpu":
            return None
        moved = host.host_plan(plan, self._cpu_capabilities(), _host_backend(), adopt=True)
        if moved is None:
            return None
        engine = _host_backend().direct_engine(moved) if moved.method == "direct" else None
        how = f"{moved.method} ({engine}'s filter where the taps allow)" if engine else moved.method
        if host.needs_check(moved):
            how += " (a result with NaN or Inf is computed again on XLA)"
        return (f"on the CPU, an eager call (JAX arrays outside jit, or host data) runs on the NumPy "
                f"backend's {how} and comes back as a JAX array (CPU handoff; CONVKIT_JAX_HOST=0 keeps "
                "it on XLA); under jit XLA runs it")

    def method_label(self, plan: Plan, kernel, *, eager: bool = True) -> str:
        """The method ``auto`` runs for ``plan`` with ``kernel`` (benchmark tables): the NumPy
        backend's label behind ``host:`` where an eager CPU call hands off (``eager=False``: a
        call under ``jit``, which never does), ``separable`` where the rank-1 test pays and
        passes, else the plan's method."""
        if eager and self.cost_platform() == "cpu":
            moved = host.host_plan(plan, self._cpu_capabilities(), _host_backend(), adopt=True)
            if moved is not None:
                return "host:" + _host_backend().method_label(moved, np.asarray(kernel))
        if separable_pays(plan, self.capabilities):
            k = np.reshape(np.asarray(kernel), plan.k_shape)
            w = np.flip(k, axis=plan.axes) if plan.op == "convolve" else np.conj(k)
            if separable_factors(w, plan.axes, plan.acc_dtype) is not None:
                return "separable"
        return plan.method

    def _check_int_fft(self, plan: Plan, in1, in2) -> None:
        """S5/S8: an explicit FFT or overlap-add on integers follows the rule every backend
        applies (:func:`convkit.bounds.require_exact_int_fft`): it raises where a float64 FFT
        cannot be proven exact. When it may, the plan computes the integer direct method (the
        same exact integers, and no float rounding at all). Traced inputs (under ``jit``,
        ``vmap``, ``grad``) have no values to check: they always get the exact direct result."""
        if plan.scalar or plan.acc_dtype.kind not in "biu" or plan.method not in ("fft", "oa"):
            return
        if self.gather_pays(plan):  # absurd pads: the array backends run the exact gathered direct
            return
        jax = _jax()
        if isinstance(in1, jax.core.Tracer) or isinstance(in2, jax.core.Tracer):
            return
        from convkit.bounds import require_exact_int_fft

        x, k = (in2, in1) if plan.swap else (in1, in2)
        if isinstance(x, np.ndarray) and isinstance(k, np.ndarray):  # host data: NumPy, no JAX call
            from ..numpy import backend as host

            xp = np
        else:
            host, xp = self, self.xp
        with _enable_x64():
            x = host.pad(plan, xp.reshape(xp.asarray(x), plan.x_shape).astype(plan.acc_dtype))
            k = xp.reshape(xp.asarray(k), plan.k_shape).astype(plan.acc_dtype)
            sizes = [x.shape[a] + me - 1 for a, me in zip(plan.axes, plan.effective_kernel)]
            require_exact_int_fft(xp, x.astype(np.float64), k.astype(np.float64), taps=plan.taps, sizes=sizes,
                                  method=plan.requested_method)

    # -- array helpers (JAX arrays are immutable)
    def set_at(self, a, index, values):
        return a.at[index].set(values)

    # -- the plan as one traceable function
    def run_plan(self, plan: Plan, platform: str, in1, in2):
        """The whole computation of ``plan`` as a pure JAX function (traced once per plan)."""
        global TRACE_COUNT
        TRACE_COUNT += 1
        jnp = self.xp
        if plan.scalar:
            return self.scalar_product(plan, jnp.asarray(in1), jnp.asarray(in2))
        x, k = (in2, in1) if plan.swap else (in1, in2)
        x = jnp.reshape(jnp.asarray(x), plan.x_shape)
        k = jnp.reshape(jnp.asarray(k), plan.k_shape)
        x = self.astype(x, plan.acc_dtype)
        k = self.astype(k, plan.acc_dtype)
        w = jnp.flip(k, axis=plan.axes) if plan.op == "convolve" else self.conj(k)
        if separable_pays(plan, self.capabilities):
            out = self._separable_or_planned(plan, platform, x, w)
        else:
            out = self._planned(plan, platform, x, w)
        if plan.flip_conj_result:
            out = self.conj(jnp.flip(out, axis=plan.axes))
        return self.astype(out, plan.out_dtype)

    def _planned(self, plan: Plan, platform: str, x, w):
        """The method the plan chose, NaN-safe (S9) where ``auto`` chose an FFT method."""
        if plan.method == "direct" or plan.acc_dtype.kind in "biu":  # integers: always exact direct
            return self.direct_jax(plan, platform, x, w)
        out = self.fft_corr(plan, x, w, plan.method)
        if plan.nan_safe:  # S9: direct's NaN/Inf positions when an input is not finite
            from jax import lax

            # a NaN/Inf in either input makes EVERY FFT output non-finite (it enters every
            # sum), so checking the (smaller, just computed) output is enough; finite
            # inputs that overflow fall back to direct too, which is still correct
            ok = _all_finite(out)
            out = lax.cond(ok, lambda o, a, b: o,
                           lambda o, a, b: self.direct_jax(plan, platform, a, b), out, x, w)
        return out

    # -- separable kernels under auto: decided at run time, the kernel may be traced
    # -- direct
    # -- FFT and overlap-add (the shared fft_corr does the geometry)


def _check_jax_dtypes(plan: Plan, in1, in2) -> None:
    """JAX has no long double (float128/complex256 on x86): a one-line ConvkitTypeError that
    names the argument, before any JAX call (JAX's own error is a jit TypeError)."""
    for name, dt in (("in1", in1.dtype), ("in2", in2.dtype), ("dtype", plan.acc_dtype),
                     ("dtype", plan.out_dtype)):
        dt = np.dtype(dt)
        if dt.kind in "fc" and dt.itemsize > (8 if dt.kind == "f" else 16):
            cast = "float64" if dt.kind == "f" else "complex128"
            what = (f"dtype={dt} (long double) is not a JAX type; pass dtype='{cast}'" if name == "dtype"
                    else f"{name} has dtype {dt} (long double), which JAX cannot hold; cast it with "
                    f"{name}.astype('{cast}')")
            raise ConvkitTypeError(f"{what}, or use backend='numpy' to compute in long double")


def _check_32bit(plan: Plan) -> None:
    """With x64 off, JAX would silently compute a 64-bit plan in 32 bits: refuse (S4)."""
    for what, dt in (("result dtype", plan.out_dtype), ("accumulation dtype", plan.acc_dtype)):
        if dt.itemsize >= 8 and not (dt.kind == "c" and dt.itemsize == 8):
            raise ConvkitTypeError(
                f"the {what} {dt} needs 64-bit types but jax_enable_x64 is off; enable it "
                "(jax.config.update('jax_enable_x64', True) or `with jax.enable_x64(True):`), "
                "pass dtype= with a 32-bit type, or cast the inputs"
            )


def _host_backend():
    from ..numpy import backend as numpy_backend

    return numpy_backend


_FUNCTIONS: dict = {}


def _plan_function(self: JaxBackend, plan: Plan, platform: str):
    """The jitted function for ``plan`` on the backend object ``self`` (both static: one trace
    per backend, plan and x64 mode; a subclass's overrides are what gets traced)."""
    fn = _FUNCTIONS.get("run")
    if fn is None:
        jax = _jax()

        def run(be: JaxBackend, plan: Plan, platform: str, in1, in2):  # a new function: a new trace cache
            return be.run_plan(plan, platform, in1, in2)

        fn = _FUNCTIONS["run"] = jax.jit(run, static_argnums=(0, 1, 2))
    return lambda a, b: fn(self, plan, platform, a, b)


backend = JaxBackend()



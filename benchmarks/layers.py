"""The ``layers`` suite: :func:`convkit.conv` (deep-learning layers) next to torch and ``lax``.

Workloads are whole layers (batch, channels, groups, a data layout), not one-channel
convolutions, so they have their own dataclass, :class:`LayerWorkload`, with the same duck
type as :class:`~.workloads.Workload` (``name``, ``group``, ``x_shape``, ``k_shape``,
``make``, ``runs_in``, ``describe``, ``macs``): the runner's checking and timing
(:func:`~.runner.prepare_checked`, :func:`~.runner.time_alone`) and the process isolation
(:func:`~.isolate.run_isolated` with ``kind="layers"``) run them unchanged.

Contenders: ``convkit[<backend>]`` (``convkit.conv(..., backend=name)`` on that backend's
arrays), torch's CPU ``conv1d/2d/3d`` (``torch.nn.functional.conv``) and a jitted
``jax.lax.conv_general_dilated`` at ``Precision.HIGHEST`` (``jax.lax.conv_general_dilated``).
Every result is checked against an independent float64 reference (:func:`layer_oracle`,
NumPy matrix products per tap) before it is timed.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .contenders import Contender

#: the peers' names (as in the table's columns ``torch`` and ``lax``)
TORCH_NAME = "torch.nn.functional.conv"
LAX_NAME = "jax.lax.conv_general_dilated"

__all__ = ["TORCH_NAME", "LAX_NAME", "LayerWorkload", "LAYER_SUITES", "layer_suite", "LAYER_FAMILIES",
           "layer_contenders", "layer_contender", "layer_oracle", "reference", "layer_method",
           "workload_from_json", "default_layer_families"]


@dataclass(frozen=True)
class LayerWorkload:
    """One layer call: ``convkit.conv(x, k, stride=, padding=, groups=, layout=, kernel_layout=)``."""

    name: str
    group: str  # "ResNet 3x3", "depthwise", "strided", "1-D"
    x_shape: tuple[int, ...]
    k_shape: tuple[int, ...]
    layout: str = "NCHW"
    kernel_layout: str = "OIHW"
    stride: int = 1
    padding: str = "same"  # "same" (TF/torch/lax placement) or "valid"
    groups: int = 1
    dtypes: tuple[str, ...] | None = ("float32",)
    target: bool = False  # the row the two targets of issue 16 are judged on

    def make(self, dtype, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Inputs in ``dtype``, in the workload's layouts (the same arrays for every contender)."""
        rng = np.random.default_rng(seed)
        return (rng.standard_normal(self.x_shape).astype(dtype),
                rng.standard_normal(self.k_shape).astype(dtype))

    def runs_in(self, dtype) -> bool:
        """Whether this workload is part of a run in ``dtype`` (each layer row has one dtype)."""
        return self.dtypes is None or np.dtype(dtype).name in self.dtypes

    @property
    def rank(self) -> int:
        """Number of spatial dimensions."""
        return len(self.layout) - 2

    @property
    def channels_last(self) -> bool:
        return self.layout.endswith("C")

    @property
    def kernel_last(self) -> bool:
        return self.kernel_layout.endswith("O")

    def canonical(self, x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` as ``(N, C, *spatial)`` and ``k`` as ``(O, C/groups, *kernel)``, contiguous."""
        r = self.rank
        if self.channels_last:
            x = np.moveaxis(x, -1, 1)
        if self.kernel_last:
            k = np.transpose(k, (r + 1, r) + tuple(range(r)))
        return np.ascontiguousarray(x), np.ascontiguousarray(k)

    def output_order(self) -> tuple[int, ...] | None:
        """The axis order taking a canonical ``(N, O, *spatial)`` result to the workload's layout
        (None: it is already in it)."""
        if not self.channels_last:
            return None
        return (0,) + tuple(range(2, self.rank + 2)) + (1,)

    def pads(self) -> tuple[tuple[int, int], ...]:
        """``(lo, hi)`` per spatial axis: 'same' as TF/torch/lax (the extra pad at the end)."""
        r = self.rank
        spatial = self.x_shape[1:-1] if self.channels_last else self.x_shape[2:]
        kernel = self.k_shape[:r] if self.kernel_last else self.k_shape[2:]
        out = []
        for n, m in zip(spatial, kernel):
            if self.padding == "valid":
                out.append((0, 0))
                continue
            total = max((-(-n // self.stride) - 1) * self.stride + m - n, 0)
            out.append((total // 2, total - total // 2))
        return tuple(out)

    @property
    def in_per_group(self) -> int:
        """The kernel's ``I``: input channels per group."""
        return self.k_shape[-2] if self.kernel_last else self.k_shape[1]

    @property
    def taps(self) -> int:
        r = self.rank
        return math.prod(self.k_shape[:r] if self.kernel_last else self.k_shape[2:])

    @property
    def terms(self) -> int:
        """Products summed into each output, ``K = C/groups * taps`` (the error bound's K)."""
        return self.in_per_group * self.taps

    @property
    def macs(self) -> int:
        """Multiply-adds of the direct method (a size hint): outputs times K."""
        r = self.rank
        spatial = self.x_shape[1:-1] if self.channels_last else self.x_shape[2:]
        out_ch = self.k_shape[-1] if self.kernel_last else self.k_shape[0]
        outputs = self.x_shape[0] * out_ch * math.prod(-(-n // self.stride) for n in spatial[:r])
        return outputs * self.terms

    def conv_kwargs(self) -> dict:
        """The keyword arguments of the ``convkit.conv`` call."""
        return {"stride": self.stride, "padding": self.padding, "groups": self.groups, "layout": self.layout,
                "kernel_layout": self.kernel_layout}

    def describe(self) -> str:
        xs = "x".join(map(str, self.x_shape))
        ks = "x".join(map(str, self.k_shape))
        extra = (f" stride {self.stride}" if self.stride != 1 else "") + (
            f" groups {self.groups}" if self.groups != 1 else "")
        return f"{xs} {self.layout}, {ks} {self.kernel_layout}, {self.padding}{extra}"


def workload_from_json(d: dict) -> LayerWorkload:
    """A layer workload back from its JSON form (lists become tuples again)."""
    return LayerWorkload(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ----------------------------------------------------------------------------- suites


def _layers() -> list[LayerWorkload]:
    """The rows of issue 16: the ResNet 3x3 target row first, then the other shapes of a network."""
    W = LayerWorkload
    return [
        W("resnet3x3-nchw", "ResNet 3x3", (8, 64, 56, 56), (64, 64, 3, 3), target=True),
        W("resnet3x3-nhwc", "ResNet 3x3", (8, 56, 56, 64), (3, 3, 64, 64), "NHWC", "HWIO"),
        W("depthwise3x3", "depthwise", (8, 64, 56, 56), (64, 1, 3, 3), groups=64),
        W("strided3x3-s2", "strided", (8, 64, 56, 56), (128, 64, 3, 3), stride=2),
        W("conv1d-4096x9", "1-D", (16, 32, 4096), (32, 32, 9), "NCW", "OIW"),
        W("resnet3x3-b2", "ResNet 3x3", (2, 64, 56, 56), (64, 64, 3, 3), dtypes=("float64",)),
    ]


def _layers_smoke() -> list[LayerWorkload]:
    """The same rows at seconds-long sizes, for the tests."""
    W = LayerWorkload
    return [
        W("resnet3x3-nchw", "ResNet 3x3", (2, 8, 12, 12), (8, 8, 3, 3), target=True),
        W("resnet3x3-nhwc", "ResNet 3x3", (2, 12, 12, 8), (3, 3, 8, 8), "NHWC", "HWIO"),
        W("depthwise3x3", "depthwise", (2, 8, 12, 12), (8, 1, 3, 3), groups=8),
        W("strided3x3-s2", "strided", (2, 8, 12, 12), (16, 8, 3, 3), stride=2),
        W("conv1d-64x9", "1-D", (2, 4, 64), (4, 4, 9), "NCW", "OIW"),
        W("resnet3x3-b1", "ResNet 3x3", (1, 8, 12, 12), (8, 8, 3, 3), dtypes=("float64",)),
    ]


LAYER_SUITES: dict[str, Callable[[], list[LayerWorkload]]] = {"layers": _layers,
                                                              "layers-smoke": _layers_smoke}


def layer_suite(name: str) -> list[LayerWorkload]:
    """The workloads of layer suite ``name``."""
    try:
        return LAYER_SUITES[name]()
    except KeyError:
        expected = ", ".join(LAYER_SUITES)
        raise ValueError(f"--suite {name!r} is not a layer suite; expected one of {expected}") from None


# ----------------------------------------------------------------------------- the oracle


def reference(w: LayerWorkload, x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The layer in float64, in ``w``'s layout: per kernel tap, the strided slice of the padded
    input times the tap's ``(O/g, C/g)`` matrix of each group (NumPy ``matmul``; no code shared
    with convkit, torch or XLA)."""
    xc, kc = w.canonical(x.astype(np.float64), k.astype(np.float64))
    n, c = xc.shape[:2]
    o, g, s = kc.shape[0], w.groups, w.stride
    xp = np.pad(xc, [(0, 0), (0, 0)] + list(w.pads()))
    kernel = kc.shape[2:]
    out_sp = tuple((p - m) // s + 1 for p, m in zip(xp.shape[2:], kernel))
    out = np.zeros((n, g, o // g, math.prod(out_sp)))
    kg = kc.reshape((g, o // g, c // g) + kernel)
    for tap in itertools.product(*(range(m) for m in kernel)):
        sl = tuple(slice(t, t + (q - 1) * s + 1, s) for t, q in zip(tap, out_sp))
        patch = xp[(slice(None), slice(None)) + sl].reshape(n, g, c // g, -1)
        out += np.matmul(kg[(Ellipsis,) + tap][None], patch)
    out = out.reshape((n, o) + out_sp)
    order = w.output_order()
    return out if order is None else np.ascontiguousarray(out.transpose(order))


def layer_oracle(w: LayerWorkload, x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ref, tol)``: the float64 :func:`reference` and, per output, the bound
    ``(K + 1) * eps(dtype) * sum|x||w|`` of a direct sum of ``K = C/groups * taps`` products in
    ``x.dtype`` (any order, with the final rounding), plus the reference's own float64 bound.

    A direct bound: every workload of the layer suites has fewer than 16 taps, so ``auto``
    runs direct on every backend (the tests check the plans)."""
    ref = reference(w, x, k)
    mag = reference(w, np.abs(x), np.abs(k))
    factor = (w.terms + 1) * (np.finfo(x.dtype).eps + np.finfo(np.float64).eps)
    return ref, factor * mag


# ----------------------------------------------------------------------------- contenders


def _convkit_layer(name: str) -> Contender:
    """``convkit.conv(..., backend=name)`` on that backend's arrays (made once, outside the timing)."""
    import convkit

    try:
        be = convkit.get_backend(name)
        ok, why = True, ""
    except Exception as exc:  # unavailable or broken backend: reported, not fatal
        be, ok, why = None, False, f"{type(exc).__name__}: {exc}"

    def prepare(w: LayerWorkload, x, k):
        xb, kb = (x, k) if name == "numpy" else (be.asarray(x), be.asarray(k))
        return functools.partial(convkit.conv, xb, kb, backend=name, **w.conv_kwargs())

    sync = (lambda r: be.sync(r)) if be is not None else (lambda r: None)
    if name == "jax":  # the very call the lax peer is synchronised with
        sync = lambda r: r.block_until_ready()  # noqa: E731
    to_numpy = (lambda r: np.asarray(be.to_host(r))) if be is not None else np.asarray
    from .contenders import _device_of

    return Contender(f"convkit[{name}]", "convkit", name == "numpy", prepare, sync, to_numpy, (ok, why),
                     _device_of(name) if ok else "unavailable")


def _torch_layer(w: LayerWorkload, x, k):
    """``torch.nn.functional.conv{1,2,3}d`` on the CPU under ``torch.inference_mode()``: the
    inputs become channels-first tensors once, outside the timing; symmetric 'same' pads go to
    ``padding=``, asymmetric ones (stride 2) to an ``F.pad`` in the call, as a torch user
    writes it; a channels-last result is returned as a permuted view (no copy)."""
    import torch
    import torch.nn.functional as F

    if x.dtype not in (np.float32, np.float64):
        return None
    xc, kc = w.canonical(x, k)
    xt, kt = torch.from_numpy(xc), torch.from_numpy(kc)
    pads = w.pads()
    symmetric = all(lo == hi for lo, hi in pads)
    flat = [p for lo_hi in reversed(pads) for p in lo_hi]  # F.pad lists the last axis first
    conv = (F.conv1d, F.conv2d, F.conv3d)[w.rank - 1]
    padding = tuple(lo for lo, _ in pads) if symmetric else 0
    order = w.output_order()

    def call():
        with torch.inference_mode():
            src = xt if symmetric else F.pad(xt, flat)
            out = conv(src, kt, stride=w.stride, padding=padding, groups=w.groups)
            return out if order is None else out.permute(order)

    return call


def _lax_padding(w: LayerWorkload):
    """lax's own spelling of the workload's padding: ``"SAME"`` or ``"VALID"``."""
    return w.padding.upper()


def _lax_layer(w: LayerWorkload, x, k):
    """A jitted ``lax.conv_general_dilated`` with the workload's layouts as its
    ``dimension_numbers``, ``feature_group_count=groups`` and ``Precision.HIGHEST``; the inputs
    become JAX arrays once, outside the timing. float64 on XLA:CPU is not run: its convolution
    reads past its input and can segfault (convkit's JAX backend avoids it the same way)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    if x.dtype == np.float64 and jax.devices()[0].platform == "cpu":
        raise RuntimeError("not run: XLA:CPU's float64 convolution reads past its input and can segfault")
    xb, kb = jnp.asarray(x), jnp.asarray(k)
    if xb.dtype != x.dtype:
        return None  # float64 without jax_enable_x64: not the same computation
    f = jax.jit(functools.partial(
        lax.conv_general_dilated, window_strides=(w.stride,) * w.rank, padding=_lax_padding(w),
        dimension_numbers=(w.layout, w.kernel_layout, w.layout), feature_group_count=w.groups,
        precision=lax.Precision.HIGHEST))
    return functools.partial(f, xb, kb)


def _installed(module: str) -> tuple[bool, str]:
    if importlib.util.find_spec(module) is not None:
        return True, ""
    return False, f"{module} is not installed"


def _torch_peers() -> list[Contender]:
    return [Contender(TORCH_NAME, "torch", False, _torch_layer, to_numpy=lambda t: t.numpy(),
                      available=_installed("torch"))]


def _jax_peers() -> list[Contender]:
    ok = _installed("jax")
    device = "unavailable"
    if ok[0]:
        import jax

        device = str(jax.devices()[0])
    return [Contender(LAX_NAME, "jax", False, _lax_layer,
                      lambda r: r.block_until_ready(), np.asarray, ok, device)]


#: the peer families of the layer suites, by name
LAYER_FAMILIES: dict[str, Callable[[], list[Contender]]] = {"torch": _torch_peers, "jax": _jax_peers}


def default_layer_families(backends: list[str]) -> list[str]:
    """torch where installed (the NumPy target's peer), plus ``jax`` when convkit[jax] is timed."""
    out = ["torch"] if importlib.util.find_spec("torch") is not None else []
    return out + (["jax"] if "jax" in backends else [])


def layer_contenders(backends: list[str], peers: list[str] | None) -> list[Contender]:
    """convkit on ``backends``, then the peers (``peers``, or :func:`default_layer_families`)."""
    out = [_convkit_layer(b) for b in backends]
    for family in (default_layer_families(backends) if peers is None else peers):
        out += LAYER_FAMILIES[family]()
    return out


def layer_contender(name: str, family: str) -> Contender:
    """The one contender called ``name`` (how an isolated worker rebuilds it)."""
    if family == "convkit":
        return _convkit_layer(name[len("convkit["):-1])
    found = [c for c in LAYER_FAMILIES[family]() if c.name == name]
    if not found:
        raise ValueError(f"no layer contender {name!r} in family {family!r}")
    return found[0]


def layer_method(w: LayerWorkload, x, k, backend: str = "numpy") -> str:
    """The method convkit's ``auto`` runs for this call (``direct`` / ``fft``), with the engine
    where the NumPy backend hands float layers to torch (``direct[torch]``)."""
    import convkit
    from convkit.conv import conv_plan

    be = convkit.get_backend(backend)
    caps = getattr(getattr(be, "capabilities", None), "methods", ())
    dt = np.dtype(x.dtype)
    plan = conv_plan(w.layout, w.kernel_layout, tuple(x.shape), tuple(k.shape), dt, dt, None, w.padding,
                     (w.stride,) * w.rank, (1,) * w.rank, w.groups, None, "highest", "auto", "fft" in caps)
    label = getattr(be, "conv_method_label", None)
    if callable(label):
        return str(label(plan))
    if backend == "numpy" and getattr(be, "engines", False):
        try:
            from convkit.backends import torch_engine

            if torch_engine.applies(plan) and torch_engine.available()[0]:
                return f"{plan.method}[torch]"
        except Exception:  # an engine that cannot be asked: the plan's method
            pass
    return plan.method

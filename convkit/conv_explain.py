"""``convkit.explain.conv``: what one :func:`convkit.conv` call computes, without running it.

It takes the arguments of :func:`convkit.conv` (arrays, or :class:`convkit.explain.Spec` shapes and
dtypes) and returns a :class:`ConvExplanation`: the plan (pads per spatial axis, output shape and
dtype, groups), the backend and method, and the same layer as runnable torch and ``lax`` code
(scripts reading ``x`` and ``w`` as NumPy arrays and leaving ``out``; the tests execute them).

>>> import convkit
>>> from convkit.explain import Spec
>>> e = convkit.explain.conv(Spec((8, 3, 32, 32), "float32"), Spec((16, 3, 4, 4), "float32"),
...                          padding="same", stride=2)
>>> e.plan.pads, e.plan.out_shape
(((1, 1), (1, 1)), (8, 16, 16, 16))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .conv import LAYOUTS, ConvPlan, _axis_values, _groups, _kernel_layout, _layout, _padding, conv_plan
from .options import PRECISIONS, _dtype, normalize_choice

__all__ = ["explain_conv", "ConvExplanation"]


@dataclass(frozen=True)
class ConvExplanation:
    """What one :func:`convkit.conv` call computes; ``str()`` gives the text."""

    plan: ConvPlan = field(repr=False)
    backend: str
    method: str
    equivalents: dict[str, str]

    def __str__(self) -> str:
        p = self.plan
        lines = [
            f"convkit.conv: x {p.x_shape} {p.layout}, w {p.w_shape} {p.kernel_layout}, groups={p.groups}",
            "  out[n, o, p] = bias[o] + sum_{c in group(o), t} pad(x)[n, c, p*stride + t*dilation]"
            " * w[o, c, t]",
            f"  in channels {p.in_channels} ({p.group_in} per group), out channels {p.out_channels}",
        ]
        for i, (n, k, (lo, hi), s, d, o) in enumerate(zip(p.in_spatial, p.kernel_spatial, p.pads, p.stride,
                                                          p.dilation, p.out_spatial)):
            lines.append(f"  spatial axis {i}: n={n}, kernel {k} (dilation {d}), pads ({lo}, {hi}), "
                         f"stride {s} -> {o}")
        lines.append(f"  output {p.out_shape} {p.out_dtype} (accumulated in {p.acc_dtype})")
        lines.append(f"  backend {self.backend}, method {self.method}")
        for lib, code in self.equivalents.items():
            lines.append(f"  {lib}:")
            lines += ["    " + line for line in code.splitlines()]
        return "\n".join(lines)


def explain_conv(x: Any, w: Any, *, stride: Any = 1, padding: Any = "valid", dilation: Any = 1,
                 groups: int = 1, layout: str | None = None, kernel_layout: str | None = None,
                 bias: Any = None, dtype: Any = None, precision: str = "highest", method: str = "auto",
                 backend: Any = None) -> ConvExplanation:
    """Explain :func:`convkit.conv` with these arguments (refused exactly where ``conv`` refuses)."""
    from .explain import Spec, _resolve

    be, _, sx, sw, _ = _resolve(x, w, backend)
    bias_info = None
    if bias is not None:
        sb = bias if isinstance(bias, Spec) else _resolve(bias, bias, backend)[2]
        bias_info = (sb.shape, sb.dtype)
    rank_guess = len(sx.shape) - 2 if len(sx.shape) - 2 in LAYOUTS else 2
    layout_c, rank = _layout(layout, rank_guess)
    plan = conv_plan(layout_c, _kernel_layout(kernel_layout, rank), sx.shape, sw.shape, sx.dtype, sw.dtype,
                     bias_info, _padding(padding, rank), _axis_values("stride", stride, rank, 1),
                     _axis_values("dilation", dilation, rank, 1), _groups(groups), _dtype(dtype),
                     normalize_choice("precision", precision, PRECISIONS),
                     normalize_choice("method", method, ("auto", "direct", "fft")),
                     "fft" in getattr(getattr(be, "capabilities", None), "methods", ()))
    name = str(getattr(be, "name", be))
    fallback = " (falls back to direct when an input is not finite)"
    method_text = plan.method + (fallback if plan.nan_safe else "")
    return ConvExplanation(plan=plan, backend=name, method=method_text,
                           equivalents={"torch": _torch_code(plan), "lax": _lax_code(plan)})


def _torch_code(p: ConvPlan) -> str:
    r = p.rank
    lines = ["import torch", "import torch.nn.functional as F",
             "t, k = torch.from_numpy(x), torch.from_numpy(w)"]
    if p.channels_last:
        lines.append("t = t.movedim(-1, 1)")
    if p.kernel_last:
        lines.append(f"k = k.permute({(r + 1, r) + tuple(range(r))})")
    flat = [q for pair in reversed(p.pads) for q in pair]
    if any(flat):
        lines.append(f"t = F.pad(t, {tuple(flat)})")
    lines.append(f"y = F.conv{r}d(t, k, stride={p.stride}, dilation={p.dilation}, groups={p.groups})")
    lines.append("out = y.movedim(1, -1).numpy()" if p.channels_last else "out = y.numpy()")
    return "\n".join(lines)


def _lax_code(p: ConvPlan) -> str:
    return "\n".join([
        "from jax import lax",
        f"out = lax.conv_general_dilated(x, w, window_strides={p.stride},",
        f"    padding={[tuple(q) for q in p.pads]}, rhs_dilation={p.dilation},",
        f"    dimension_numbers=({p.layout!r}, {p.kernel_layout!r}, {p.layout!r}),",
        f"    feature_group_count={p.groups}, precision=lax.Precision.HIGHEST)",
    ])

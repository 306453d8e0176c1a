"""Independent references for ``convkit.conv`` (S15): explicit loops over tiny cases.

Nothing here calls convkit. :func:`reference_conv` sums the definition literally, in Python
integers for integer data (then wraps to the result type like two's complement) and in float64
with ``math.fsum`` for float data, together with ``sum |x| |w|`` per output for the S5 bound.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from convkit.bounds import gamma, unit_roundoff


def wrap(value: int, dtype) -> int:
    """``value`` reduced to the integer ``dtype`` (two's complement)."""
    dt = np.dtype(dtype)
    bits = 8 * dt.itemsize
    value %= 2**bits
    if dt.kind == "i" and value >= 2 ** (bits - 1):
        value -= 2**bits
    return value


def same_pads(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TF/Keras 'SAME' (stride-aware), written from the TF documentation formula."""
    me = (k - 1) * d + 1
    out = -(-n // s)
    total = max((out - 1) * s + me - n, 0)
    return total // 2, total - total // 2


def reference_conv(x, w, *, stride=1, pads=0, dilation=1, groups=1, bias=None):
    """Channels-first ``x (N, C, *S)``, ``w (O, C/g, *K)``; ``pads`` an int or (lo, hi) pairs.

    Returns ``(out, magnitude)``: ``out`` as Python ints (object array) for integer inputs or
    float64, and ``sum |x| |w|`` per output (float64).
    """
    x, w = np.asarray(x), np.asarray(w)
    r = x.ndim - 2
    stride = (stride,) * r if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * r if isinstance(dilation, int) else tuple(dilation)
    if isinstance(pads, int):
        pads = ((pads, pads),) * r
    exact = x.dtype.kind in "iu" and w.dtype.kind in "iu"
    n, c = x.shape[:2]
    o = w.shape[0]
    cg, og = c // groups, o // groups
    ks = w.shape[2:]
    out_sp = [(x.shape[2 + a] + pads[a][0] + pads[a][1] - (ks[a] - 1) * dilation[a] - 1) // stride[a] + 1
              for a in range(r)]
    out = np.empty((n, o, *out_sp), dtype=object if exact else np.float64)
    mag = np.zeros((n, o, *out_sp))
    xs = x.astype(object) if exact else x.astype(np.float64)
    ws = w.astype(object) if exact else w.astype(np.float64)
    for b, oc in itertools.product(range(n), range(o)):
        g = oc // og
        for pos in itertools.product(*(range(m) for m in out_sp)):
            terms = []
            for ci in range(cg):
                for tap in itertools.product(*(range(k) for k in ks)):
                    src = [pos[a] * stride[a] + tap[a] * dilation[a] - pads[a][0] for a in range(r)]
                    inside = all(0 <= s < x.shape[2 + a] for a, s in enumerate(src))
                    xv = xs[(b, g * cg + ci, *src)] if inside else 0
                    terms.append(xv * ws[(oc, ci, *tap)])
            if bias is not None:
                terms.append(bias[oc] if exact else float(bias[oc]))
            out[(b, oc, *pos)] = sum(terms) if exact else math.fsum(terms)
            mag[(b, oc, *pos)] = sum(abs(float(t)) for t in terms)
    return out, mag


def assert_close_to_reference(got, ref, mag, taps: int, dtype) -> None:
    """``|got - ref| <= gamma_taps(u) * sum |x||w|`` (+ one rounding of the result), elementwise."""
    got = np.asarray(got, dtype=np.float64)
    u = unit_roundoff(dtype)
    bound = (gamma(taps + 1, u) + u) * mag + np.finfo(np.float64).tiny
    err = np.abs(got - ref)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"error {err[worst]:.3g} above the bound {bound[worst]:.3g} at {worst}"

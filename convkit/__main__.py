"""``python -m convkit``: the ``convkit`` command line (``demo``, ``info``, ``check``, ``bench``,
``tune``: ``python -m convkit --help``); without a command, the backends on this machine and
three classic confusions resolved, which this module implements.

Without a command it prints every backend with its availability (and why not), then shows
on real numbers how convkit spells the conventions of SciPy, NumPy, torch/TF/Keras and ``lax``:

1. flip: ``np.convolve``/``scipy.signal.convolve`` flip the kernel; DL "conv" layers do not
   (and do not conjugate);
2. ``'same'`` with an even kernel: SciPy centres differently from TF/Keras/torch (and from
   ``scipy.signal.correlate2d``); ``np.convolve(..., 'same')`` has length ``max(N, M)``;
3. stride with ``'same'``: TF/Keras/``lax`` pads depend on the input length.

Every number printed for a library comes from that library (or, for the DL layers, from
a plain NumPy sliding-window definition, and from ``jax.lax`` when JAX is installed) and is
checked against the convkit call printed next to it. The exit status is non-zero if any
check fails. :func:`demo` and :func:`show_backends` can be called from other code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

__all__ = ["Check", "demo", "main", "show_backends"]


@dataclass
class Check:
    """One line of the demo: a library's result and the convkit call that reproduces it."""

    library: str
    library_value: Any
    convkit: str
    convkit_value: Any

    @property
    def ok(self) -> bool:
        a, b = np.asarray(self.library_value), np.asarray(self.convkit_value)
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return bool(np.allclose(a, b, rtol=1e-6, atol=1e-6))
        return bool(np.array_equal(a, b))


def _fmt(v: Any) -> str:
    a = np.asarray(v)
    if a.dtype.kind == "c":
        return "[" + ", ".join(f"{z.real:g}{z.imag:+g}j" for z in a.ravel()) + "]"
    if a.dtype.kind == "f" and np.all(a == np.round(a)):
        a = a.astype(np.int64)
    return str(a.tolist()).replace(" ", "")


def dl_conv(x, k, pads: tuple[int, int], stride: int = 1) -> np.ndarray:
    """What torch ``conv1d`` / TF ``conv1d`` / ``lax.conv`` compute, by their definition:
    zero-pad, then ``out[i] = sum_j xpad[i*stride + j] * k[j]`` (no flip, no conjugate)."""
    xp = np.pad(np.asarray(x), pads)
    windows = np.lib.stride_tricks.sliding_window_view(xp, len(k))[::stride]
    return windows @ np.asarray(k)


def tf_same_pads(n: int, m: int, stride: int) -> tuple[int, int]:
    """TF/Keras ``padding='same'`` (and ``lax`` ``'SAME'``): the extra pad goes at the end."""
    total = max((-(-n // stride) - 1) * stride + m - n, 0)
    return total // 2, total - total // 2


def _lax_same(x, k, stride: int):
    """``lax.conv_general_dilated(..., padding='SAME')`` when JAX is installed, else None."""
    try:
        from jax import lax
    except Exception:
        return None
    x32 = np.asarray(x, np.float32)[None, None, :]
    k32 = np.asarray(k, np.float32)[None, None, :]
    out = lax.conv_general_dilated(x32, k32, (stride,), "SAME", precision=lax.Precision.HIGHEST)
    return np.asarray(out)[0, 0]


def show_backends(file: TextIO | None = None) -> None:
    """Print every known backend with its availability and the reason when unavailable."""
    from convkit import list_backends

    file = file or sys.stdout
    print("Backends (first match wins: device inputs > backend= > use_backend > set_backend >"
          " CONVKIT_BACKEND > numpy):", file=file)
    for row in list_backends():
        state = "available" if row.available else "unavailable"
        reason = f"  ({row.reason})" if row.reason else ""
        print(f"  {row.name:10s} {state}{reason}", file=file)


def _checks() -> list[tuple[str, str, list[Check]]]:
    import scipy.signal as ss

    import convkit as ck

    sections = []

    # 1. flip (and conjugation)
    x, k = np.array([1, 2, 3, 4, 5]), np.array([1, 10, 100])
    xc, kc = np.array([1, 2j, 3, 1 + 1j]), np.array([1j, 1])
    sections.append((
        "1. Flip: convolution flips the kernel, DL 'conv' layers do not (and never conjugate)",
        f"x = {_fmt(x)}, k = {_fmt(k)};  complex: xc = {_fmt(xc)}, kc = {_fmt(kc)}",
        [
            Check("np.convolve(x, k, 'valid')", np.convolve(x, k, "valid"),
                  "convkit.convolve(x, k, 'valid')", ck.convolve(x, k, "valid")),
            Check("scipy.signal.convolve(x, k, 'valid')", ss.convolve(x, k, "valid"),
                  "convkit.convolve(x, k, 'valid')", ck.convolve(x, k, "valid")),
            Check("torch conv1d(x, k) / keras Conv1D", dl_conv(x, k, (0, 0)),
                  "convkit.correlate(x, k, 'valid')", ck.correlate(x, k, "valid")),
            Check("scipy.signal.correlate(xc, kc, 'valid')", ss.correlate(xc, kc, "valid"),
                  "convkit.correlate(xc, kc, 'valid')", ck.correlate(xc, kc, "valid")),
            Check("torch conv1d(xc, kc)  (no conj)", dl_conv(xc, kc, (0, 0)),
                  "convkit.correlate(xc, kc.conj(), 'valid')", ck.correlate(xc, kc.conj(), "valid")),
        ],
    ))

    # 2. 'same' with an even kernel, and NumPy's 'same'
    x4 = np.array([1, 2, 3, 4])
    k4 = np.array([1, 2, 3, 4])
    x3, k6 = np.array([1, 2, 3]), 10 ** np.arange(6)
    tf_pads = tf_same_pads(len(x4), len(k4), 1)
    same = [
        Check("scipy.signal.correlate(x, k, 'same')", ss.correlate(x4, k4, "same"),
              "convkit.correlate(x, k, 'same')", ck.correlate(x4, k4, "same")),
        Check(f"torch conv1d(x, k, padding='same')  pads {tf_pads}", dl_conv(x4, k4, tf_pads),
              "convkit.correlate(x, k, 'same', align='tf')", ck.correlate(x4, k4, "same", align="tf")),
        Check("scipy.signal.correlate2d(x, k, 'same')  (2-D, row 0)",
              ss.correlate2d(x4[None], k4[None], "same")[0],
              "convkit.correlate(x, k, 'same', align='tf')", ck.correlate(x4, k4, "same", align="tf")),
        Check("np.convolve(x, k, 'same')", np.convolve(x4, k4, "same"),
              "convkit.convolve(x, k, 'same')", ck.convolve(x4, k4, "same")),
        Check("scipy.signal.convolve(x3, k6, 'same')", ss.convolve(x3, k6, "same"),
              "convkit.convolve(x3, k6, 'same')", ck.convolve(x3, k6, "same")),
        Check("np.convolve(x3, k6, 'same')[1:4]  (len max(N,M)=6)", np.convolve(x3, k6, "same")[1:4],
              "convkit.convolve(x3, k6, 'same')", ck.convolve(x3, k6, "same")),
    ]
    lax_same = _lax_same(x4, k4, 1)
    if lax_same is not None:
        same.insert(2, Check("jax.lax.conv_general_dilated(..., 'SAME')", lax_same,
                             "convkit.correlate(x, k, 'same', align='tf')",
                             ck.correlate(x4, k4, "same", align="tf")))
    sections.append((
        "2. 'same' with an even kernel: SciPy pads more at the start, TF/Keras/torch at the end",
        f"x = {_fmt(x4)}, k = {_fmt(k4)};  x3 = {_fmt(x3)}, k6 = {_fmt(k6)}",
        same,
    ))

    # 3. stride + 'same': the pads depend on N
    k3 = np.array([1, 10, 100])
    strided = []
    for n in (7, 8):
        xn = np.arange(1, n + 1)
        pads = tf_same_pads(n, len(k3), 2)
        ck_val = ck.correlate(xn, k3, "same", align="tf", stride=2)
        strided.append(Check(f"keras Conv1D(strides=2, padding='same'), N={n}: pads {pads}",
                             dl_conv(xn, k3, pads, stride=2),
                             "convkit.correlate(x, k, 'same', align='tf', stride=2)", ck_val))
        lax_val = _lax_same(xn, k3, 2)
        if lax_val is not None:
            strided.append(Check(f"jax.lax.conv_general_dilated(..., (2,), 'SAME'), N={n}", lax_val,
                                 "convkit.correlate(x, k, 'same', align='tf', stride=2)", ck_val))
        strided.append(Check(f"scipy.signal.correlate(x, k, 'same')[::2], N={n}",
                             ss.correlate(xn, k3, "same")[::2],
                             "convkit.correlate(x, k, 'same', stride=2)",
                             ck.correlate(xn, k3, "same", stride=2)))
    sections.append((
        "3. stride 2 + 'same': TF/Keras/lax pads depend on N; SciPy-centred 'same' then [::2] does not",
        f"x = 1..N, k = {_fmt(k3)}",
        strided,
    ))
    return sections


def demo(file: TextIO | None = None) -> bool:
    """Print the three confusions with the convkit call for each library; True if all checks pass."""
    file = file or sys.stdout
    all_ok = True
    print("\nEach library result (left) is checked against the convkit call under it. torch/Keras rows are"
          "\ncomputed from the layers' definition (zero-pad, sliding dot product, no flip) with NumPy;"
          "\njax.lax rows run JAX itself when it is installed.", file=file)
    for title, data, checks in _checks():
        print(f"\n{title}\n   {data}", file=file)
        for c in checks:
            all_ok &= c.ok
            mark = "ok  " if c.ok else "FAIL"
            print(f"  {mark} {c.library:58s} = {_fmt(c.library_value)}", file=file)
            print(f"       {'':4s}{c.convkit:54s} = {_fmt(c.convkit_value)}", file=file)
    print("\nall checks passed" if all_ok else "\nSOME CHECKS FAILED", file=file)
    return all_ok


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m convkit``: the ``convkit`` command line (:func:`convkit.cli.main`),
    so ``python -m convkit info`` is ``convkit info``; without a command, the backends and the demo."""
    from .cli import main as cli_main

    return cli_main(argv, prog="python -m convkit")


if __name__ == "__main__":
    sys.exit(main())

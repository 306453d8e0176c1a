"""Large inputs on the JAX backend: 4096x4096 float32/float64 images with a 3x3 kernel
(direct), a 63x63 kernel (FFT/overlap-add under ``auto``) and a 15x15 Gaussian (separable
passes in float64, direct in float32) complete and stay within the S5 bounds of SciPy float64
oracles.

Each size runs in a subprocess, so an out-of-memory kill or an XLA crash fails the test
instead of the whole run. Marked ``slow`` (still part of the default suite; about 10-30 s
each on 2 cores; deselect with ``-m "not slow"``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, scipy.ndimage, scipy.signal
    import convkit
    from convkit.testing import fft_bound, unit_roundoff

    gauss = sys.argv[1].endswith("g")  # a Gaussian: float64 auto runs the separable passes
    m = int(sys.argv[1].rstrip("g"))
    rng = np.random.default_rng(7)
    x64 = rng.standard_normal((4096, 4096))
    k64 = rng.standard_normal((m, m))
    if gauss:  # oracle: SciPy's two float64 1-D passes with the exact factors (error ~ 2m u)
        g = np.exp(-0.5 * np.linspace(-2.5, 2.5, m) ** 2)
        k64 = np.outer(g, g)

        def passes(a):
            a = scipy.ndimage.convolve1d(a, g, axis=0, mode="constant")
            return scipy.ndimage.convolve1d(a, g, axis=1, mode="constant")

        ref, mag = passes(x64), passes(np.abs(x64))
    elif m <= 5:  # direct: exact float64 oracle via ndimage (same as convolve 'same' for odd m)
        ref = scipy.ndimage.convolve(x64, k64, mode="constant")
        mag = scipy.ndimage.convolve(np.abs(x64), np.abs(k64), mode="constant")
    else:
        ref = scipy.signal.fftconvolve(x64, k64, "same")
    for dtype in (np.float32, np.float64):
        x, k = x64.astype(dtype), k64.astype(dtype)
        out = convkit.convolve(x, k, "same", backend="jax")
        assert type(out) is np.ndarray and out.dtype == dtype and out.shape == x.shape
        assert np.isfinite(out).all()
        err = np.abs(out.astype(np.float64) - ref)
        u = unit_roundoff(dtype)
        if m <= 5 or gauss:  # S5 elementwise direct bound (K taps) + input rounding + output rounding
            K = m * m
            bound = (2 * K + 2) * u * mag + 4 * K * 2.0**-53 * mag
        else:  # S5 normwise FFT bound for dtype and for the float64 oracle
            bound = fft_bound(x, k, mode="same") + fft_bound(x64, k64, mode="same")
            if dtype == np.float32:  # rounding the inputs to float32 (Cauchy-Schwarz per output)
                bound += 2.1 * u * float(np.linalg.norm(x64) * np.linalg.norm(k64))
        bad = err > bound
        assert not bad.any(), (dtype, m, float(err.max()), float(np.min(bound)))
        print(dtype.__name__, m, "max error", float(err.max()))
    print("OK")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("m", ["3", "63", "15g"])
def test_4096_squared_image(m):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, m], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, (
        f"subprocess failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )

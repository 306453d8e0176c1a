"""The NumPy backend's threaded paths: ``_map`` and the row-blocked ndimage / separable filters.

The conformance suite's inputs are too small to be cut into threads, so these tests force the
cut (no minimum work, 3 threads) and compare with the exact reference (S5 bounds).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from reference import reference

import convkit
from convkit.backends import numpy as nb
from convkit.testing import assert_conv_close


@pytest.fixture
def threaded(monkeypatch):
    """Cut every N-d direct / separable call into 3 row blocks."""
    monkeypatch.setattr(nb, "_THREAD_MIN_WORK", 0)
    monkeypatch.setattr(nb, "cpu_threads", lambda: 3)


def test_map_runs_every_job_once_first_in_the_caller():
    seen, caller = [], threading.get_ident()
    nb._map(lambda i: seen.append((i, threading.get_ident())), [(i,) for i in range(5)])
    assert sorted(i for i, _ in seen) == list(range(5))
    assert dict(seen)[0] == caller


@pytest.mark.parametrize("bad", [0, 3])
def test_map_raises_a_job_error_after_all_jobs_ended(bad):
    done = []

    def job(i):
        if i == bad:
            raise ValueError(f"job {i}")
        done.append(i)

    with pytest.raises(ValueError, match=f"job {bad}"):
        nb._map(job, [(i,) for i in range(4)])
    assert sorted(done) == [i for i in range(4) if i != bad]


@pytest.mark.parametrize("boundary", ["fill", "symm", "mirror", "nearest", "wrap"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_blocked_direct_matches_reference(threaded, boundary, dtype, rng):
    """S1/S10: the ndimage direct path in row blocks (halo read from the neighbouring rows)."""
    a = rng.standard_normal((31, 17)).astype(dtype)
    b = rng.standard_normal((4, 3)).astype(dtype)
    for kw in (dict(mode="same", boundary=boundary), dict(mode="same", boundary=boundary, origin=(1, -1)),
               dict(mode="same", boundary=boundary, axes=(1,))):
        k = b[:1] if kw.get("axes") == (1,) else b
        got = convkit.convolve(a, k, backend="numpy", method="direct", **kw)
        assert_conv_close(got, reference("convolve", a, k, **kw), a, k, method="direct",
                          check_dtype=False, **kw)


def test_blocked_separable_matches_reference(threaded, monkeypatch, rng):
    """The separable path's 1-D passes in row blocks."""
    calls = []
    real = nb.NumpyBackend._separable
    monkeypatch.setattr(nb.NumpyBackend, "_separable", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(nb, "_separable_pays", lambda plan, caps: True)
    a = rng.standard_normal((40, 33))
    g = np.exp(-0.5 * np.linspace(-2, 2, 7) ** 2)
    k = np.outer(g, g[:5])
    for boundary in ("fill", "symm", "wrap"):
        kw = dict(mode="same", boundary=boundary)
        got = convkit.convolve(a, k, backend="numpy", **kw)
        assert_conv_close(got, reference("convolve", a, k, **kw), a, k, **kw)
    assert len(calls) == 3

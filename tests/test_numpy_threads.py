"""The NumPy backend's threaded paths: ``_map`` and the row-blocked ndimage / separable filters.

The conformance suite's inputs are too small to be cut into threads, so these tests force the
cut (``thread_min_time=0``, 3 threads) and compare with the exact reference (S5 bounds).
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
from reference import reference

import convkit
from convkit.backends import numpy as nb
from convkit.backends._base import even_spans
from convkit.testing import assert_conv_close


@pytest.fixture
def threaded(monkeypatch):
    """Cut every N-d direct / separable call into 3 row blocks (SciPy's kernels: no OpenCV)."""
    be = nb.backend
    monkeypatch.setattr(be, "capabilities", dataclasses.replace(be.capabilities, thread_min_time=0.0))
    monkeypatch.setattr(be, "engines", False)
    monkeypatch.setattr(nb, "cpu_threads", lambda: 3)


@pytest.mark.parametrize("n, count, start", [(10, 3, 0), (7, 7, 5), (3, 8, 2), (1000, 4, 17), (0, 2, 0)])
def test_even_spans_cover_the_range_once(n, count, start):
    """The engines' thread jobs: ``[start, start + n)`` in spans that differ by at most one in
    length, in order, none empty, none missing."""
    spans = even_spans(n, count, start)
    covered = [i for a, b in spans for i in range(a, b)]
    assert covered == list(range(start, start + n))
    lengths = [b - a for a, b in spans]
    assert all(v > 0 for v in lengths) and len(spans) == min(n, count)
    assert not lengths or max(lengths) - min(lengths) <= 1


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
    real = nb.NumpyBackend.separable_passes
    monkeypatch.setattr(nb.NumpyBackend, "separable_passes", lambda *a: calls.append(1) or real(*a))
    cheap = dataclasses.replace(nb.backend.capabilities, c_sep=1e-30, c_out=0.0)
    monkeypatch.setattr(nb.backend, "capabilities", cheap)
    a = rng.standard_normal((40, 33))
    g = np.exp(-0.5 * np.linspace(-2, 2, 7) ** 2)
    k = np.outer(g, g[:5])
    for boundary in ("fill", "symm", "wrap"):
        kw = dict(mode="same", boundary=boundary)
        got = convkit.convolve(a, k, backend="numpy", **kw)
        assert_conv_close(got, reference("convolve", a, k, **kw), a, k, **kw)
    assert len(calls) == 3


@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128", "int64", "int8", "bool"])
@pytest.mark.parametrize("n, m", [(40, 5), (10, 9), (4, 13), (1, 3)])
def test_blocked_1d_direct_is_bit_identical(threaded, dtype, n, m, rng):
    """1-D direct in one ``numpy.convolve`` block per thread gives exactly what one call gives
    (every output is the same dot product), including blocks shorter than the kernel."""
    if dtype == "bool":
        a, b = rng.integers(0, 2, n).astype(bool), rng.integers(0, 2, m).astype(bool)
    elif np.dtype(dtype).kind == "i":
        a, b = rng.integers(-100, 100, n).astype(dtype), rng.integers(-100, 100, m).astype(dtype)
    else:
        a, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(m).astype(dtype)
    for op in ("convolve", "correlate"):
        for kw in (dict(mode="full"), dict(mode="same"), dict(mode="causal"), dict(mode="same", dilation=2)):
            got = getattr(convkit, op)(a, b, backend="numpy", method="direct", **kw)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(nb, "cpu_threads", lambda: 1)
                one = getattr(convkit, op)(a, b, backend="numpy", method="direct", **kw)
            np.testing.assert_array_equal(got, one)
            if np.dtype(dtype).kind in "bi":
                np.testing.assert_array_equal(got, reference(op, a, b, **kw))


@pytest.mark.parametrize("x_shape, k_shape, axes", [
    ((50,), (7,), None), ((9,), (12,), None), ((3, 40), (1, 6), (1,)), ((3, 40), (3, 6), (1,)),
    ((40, 3), (5, 1), (0,)),
])
@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128"])
def test_overlap_add_in_slabs_matches_reference(monkeypatch, x_shape, k_shape, axes, dtype, rng):
    """1-D overlap-add in fixed-size slabs (here 7 outputs, some shorter than the
    kernel), batched or not: within the S5 bound."""
    monkeypatch.setattr(nb, "_OA_THREAD_MIN_SIZE", 0)
    monkeypatch.setattr(nb, "_oa_block", lambda m: 7)
    monkeypatch.setattr(nb, "cpu_threads", lambda: 3)
    calls = []
    real = nb._full_in_blocks
    monkeypatch.setattr(nb, "_full_in_blocks", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = rng.standard_normal(x_shape).astype(dtype)
    b = rng.standard_normal(k_shape).astype(dtype)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(x_shape)
    for kw in (dict(mode="full"), dict(mode="same", boundary="symm")):
        kw = dict(kw, axes=axes) if axes else kw
        got = convkit.convolve(a, b, backend="numpy", method="oa", **kw)
        assert_conv_close(got, reference("convolve", a, b, **kw), a, b, method="oa", check_dtype=False, **kw)
    assert len(calls) == 2


def test_map_caller_takes_the_jobs_a_late_helper_has_not_claimed(monkeypatch):
    """A helper that is not scheduled in time (a busy machine) leaves its jobs to the caller,
    and the caller does not wait for it: every job runs once, all in the calling thread."""
    import concurrent.futures

    release = threading.Event()

    class LatePool:
        def submit(self, fn):
            def late():
                release.wait()
                fn()
            return concurrent.futures.ThreadPoolExecutor(1).submit(late)

    monkeypatch.setattr(nb, "_pool", lambda: LatePool())
    monkeypatch.setattr(nb, "cpu_threads", lambda: 2)
    seen, caller = [], threading.get_ident()
    nb._map(lambda i: seen.append((i, threading.get_ident())), [(i,) for i in range(6)])
    assert sorted(i for i, _ in seen) == list(range(6))
    assert all(t == caller for _, t in seen)
    release.set()  # the helper now runs, finds nothing left to claim, and ends


def test_late_helpers_make_the_next_calls_run_on_one_core(monkeypatch):
    """A helper that started a job and was then descheduled (the caller waited for it longer
    than its own work took, and the helper spent that time off its core) marks the machine
    busy: for ``BUSY_HOLD`` seconds every job list runs on the calling thread and
    ``_cores_now`` gives one core; then helpers run again."""
    import time

    monkeypatch.setattr(nb, "_busy_until", 0.0)
    monkeypatch.setattr(nb, "cpu_threads", lambda: 2)
    caller = threading.get_ident()

    started = threading.Event()

    def job(i):
        if threading.get_ident() == caller:  # the caller's job ends once the helper has started
            started.wait(5)
        else:  # the helper's job: descheduled for 200 ms (long: the caller may be descheduled too)
            started.set()
            time.sleep(0.2)

    nb._map(job, [(i,) for i in range(2)])
    assert nb._busy_until > time.monotonic() and nb._cores_now(2) == 1 and nb._cores_now(1) == 1
    seen = []
    nb._map(lambda i: seen.append(threading.get_ident()), [(i,) for i in range(8)])
    assert seen == [caller] * 8
    monkeypatch.setattr(nb, "_busy_until", time.monotonic() - 1.0)  # the hold is over
    assert nb._cores_now(2) == 2



def test_a_helper_slow_on_its_own_core_is_not_a_busy_machine(monkeypatch):
    """A helper that ran its job the whole time, only slowly (the page faults of a fresh
    output on a first call), leaves the machine marked idle although the caller waited for it:
    its CPU time covers its wall time. Faked with a clock that only the helper's job moves,
    as wall and CPU time at once: 50 ms of work on its core, started on time (a real clock
    would make the test depend on how soon a loaded test machine schedules the helper)."""
    import time
    import types

    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    fake_time = types.SimpleNamespace(perf_counter=clock, thread_time=clock, monotonic=time.monotonic)
    monkeypatch.setattr(nb, "time", fake_time)
    monkeypatch.setattr(nb, "_busy_until", 0.0)
    monkeypatch.setattr(nb, "cpu_threads", lambda: 2)
    caller = threading.get_ident()
    started = threading.Event()
    ran = []

    def job(i):
        ran.append(threading.get_ident())
        if threading.get_ident() == caller:
            started.wait(5)
        else:
            started.set()
            time.sleep(0.01)
            now[0] += 0.05

    nb._map(job, [(i,) for i in range(2)])
    assert len(set(ran)) == 2  # the helper ran a job, and the caller waited for it
    assert nb._busy_until == 0.0 and nb._cores_now(2) == 2

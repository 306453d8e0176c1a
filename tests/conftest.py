"""Shared fixtures: the conformance suite runs once per available backend runner.

``--backend NAME`` (repeatable) or ``CONVKIT_TEST_BACKENDS=a,b`` restricts the run to those
backends; a backend requested that way but unavailable FAILS the run (a GPU job can never
pass by skipping everything). Without a request, unavailable backends are skipped with
their reason.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from convkit import testing as ck_testing


def pytest_addoption(parser):
    parser.addoption("--backend", action="append", default=[],
                     help="run the conformance suite on this backend/runner only (repeatable)")


def _requested(config) -> list[str] | None:
    names = list(config.getoption("--backend"))
    env = os.environ.get("CONVKIT_TEST_BACKENDS", "")
    names += [n.strip() for n in env.split(",") if n.strip()]
    return names or None


def pytest_generate_tests(metafunc):
    if "runner" in metafunc.fixturenames:
        runners = ck_testing.runners(_requested(metafunc.config))
        metafunc.parametrize("runner", runners, ids=[r.name for r in runners], indirect=True)


@pytest.fixture
def runner(request):
    r = request.param
    ok, reason = r.available()
    if not ok:
        if _requested(request.config):
            pytest.fail(f"requested backend {r.name!r} is unavailable: {reason}")
        pytest.skip(f"backend {r.backend!r} unavailable: {reason}")
    return r


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _clean_dispatch_state():
    """Each test starts with no process default and CONVKIT_BACKEND re-read."""
    from convkit import dispatch

    dispatch.reload_environment()
    yield
    dispatch.reload_environment()

"""`python -m convkit`: lists the backends and checks the three classic confusions (flip, 'same', stride)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np

from convkit import __main__ as demo_mod


def test_python_m_convkit_runs_and_passes():
    env = {k: v for k, v in os.environ.items() if k != "CONVKIT_BACKEND"}
    res = subprocess.run([sys.executable, "-m", "convkit"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for name in ("numpy", "cupy", "jax"):  # every built-in backend, with its state
        assert any(line.split()[:1] == [name] and ("available" in line) for line in out.splitlines())
    assert "  numpy      available\n" in out
    assert "all checks passed" in out and "FAIL" not in out
    for phrase in ("np.convolve(x, k, 'valid')", "align='tf'", "stride=2", "pads (0, 1)", "pads (1, 1)"):
        assert phrase in out


def test_demo_checks_use_library_numbers():
    # the library side of each check is the library's (or the layer definition's) own result
    sections = demo_mod._checks()
    assert len(sections) == 3
    checks = [c for _, _, cs in sections for c in cs]
    assert len(checks) >= 12 and all(c.ok for c in checks)
    libs = {c.library: c.library_value for c in checks}
    assert np.asarray(libs["np.convolve(x, k, 'valid')"]).tolist() == [123, 234, 345]
    assert np.asarray(libs["torch conv1d(x, k) / keras Conv1D"]).tolist() == [321, 432, 543]


def test_dl_conv_and_tf_pads_definition():
    assert demo_mod.tf_same_pads(7, 3, 2) == (1, 1)
    assert demo_mod.tf_same_pads(8, 3, 2) == (0, 1)
    assert demo_mod.tf_same_pads(4, 4, 1) == (1, 2)
    assert demo_mod.dl_conv([1, 2, 3, 4], [1, 10], (0, 1), stride=2).tolist() == [21, 43]


def test_demo_fails_when_a_check_fails(monkeypatch, capsys):
    bad = demo_mod.Check("lib", [1, 2, 3], "convkit", [1, 2, 4])
    assert not bad.ok
    assert not demo_mod.Check("lib", [1, 2], "convkit", [1, 2, 0]).ok  # shape differs
    assert demo_mod.Check("lib", [1.0, 2.0], "convkit", np.array([1, 2])).ok
    monkeypatch.setattr(demo_mod, "_checks", lambda: [("t", "data", [bad])])
    buf = io.StringIO()
    assert demo_mod.demo(buf) is False
    assert "FAIL" in buf.getvalue() and "SOME CHECKS FAILED" in buf.getvalue()
    assert demo_mod.main([]) == 1

"""The fused CUDA direct kernel (backends/cupy_kernels.py), checked without a GPU.

* the kernel's template rendered as NumPy (``direct_kernel_python``) against the exact
  reference (tests/reference.py) over a random grid: every boundary, strides, dilations,
  negative and huge pads, batch broadcasting, int8..uint64 wrap-around, bool, complex and
  floats with zero taps and NaN inputs; floats bitwise against the shift-and-add;
* the generated CUDA text compiled with ``g++`` (CUDA qualifiers stubbed) and RUN on the host
  over the same cases (skipped where g++ is missing);
* the CUDA text compiled with ``nvcc -ptx`` (skipped only where nvcc is missing).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess

import numpy as np
import pytest
from reference import random_array, reference

from convkit.backends import cupy_kernels as ck
from convkit.backends._base import ArrayBackend
from convkit.dispatch import get_backend
from convkit.plan import plan_call

INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
DTYPES = INT_DTYPES + ("bool", "float32", "float64", "complex64", "complex128")
BOUNDARIES = ("fill", "symm", "reflect", "mirror", "edge", "wrap")  # convkit names: reflect = symm


def _case(rng: np.random.Generator, i: int) -> dict:
    """One random call: inputs and convkit options."""
    dtype = DTYPES[i % len(DTYPES)]
    ndim = int(rng.integers(1, 4))
    n_ax = int(rng.integers(1, ndim + 1))
    axes = tuple(sorted(rng.choice(ndim, n_ax, replace=False).tolist()))
    xs = [int(rng.integers(1, 7)) for _ in range(ndim)]
    ks = [int(rng.integers(1, 5)) if a in axes else int(rng.choice([1, xs[a]])) for a in range(ndim)]
    stride = tuple(int(rng.integers(1, 4)) for _ in axes)
    dilation = tuple(int(rng.integers(1, 4)) for _ in axes)
    boundary = BOUNDARIES[int(rng.integers(len(BOUNDARIES)))]
    kind = rng.integers(6)
    if kind < 4:
        mode = ("full", "same", "valid", "causal")[kind]
        if mode == "valid" and any(xs[a] < (ks[a] - 1) * d + 1 for a, d in zip(axes, dilation)):
            mode = "full"
    else:  # explicit pads, negative (crop) and longer than the input (repeating the rule)
        pads = []
        for a, d in zip(axes, dilation):
            me = (ks[a] - 1) * d + 1
            lo = int(rng.integers(-xs[a] + 1, 3 * xs[a] + 4))
            hi = max(int(rng.integers(-xs[a] + 1, 3 * xs[a] + 4)), me - xs[a] - lo)
            pads.append((lo, hi))
        mode = tuple(pads)
    x = random_array(rng, xs, dtype)
    k = random_array(rng, ks if rng.integers(2) or n_ax == ndim else [ks[a] for a in axes], dtype)
    if np.dtype(dtype).kind in "fc":
        k.reshape(-1)[rng.integers(k.size)] = 0  # a zero tap (ndimage would skip it)
        if rng.integers(2):
            x.reshape(-1)[rng.integers(x.size)] = np.nan  # NaN through a zero tap stays NaN (S9)
    fill = 0
    if boundary == "fill" and rng.integers(2):
        fill = {"b": True, "i": -3, "u": 7, "f": 1.5, "c": 0.5 - 2j}[np.dtype(dtype).kind]
    opts = dict(mode=mode, axes=axes if n_ax < ndim or rng.integers(2) else None, boundary=boundary,
                fillvalue=fill, stride=stride, dilation=dilation, method="direct")
    if opts["axes"] is None and k.ndim != x.ndim:
        opts["axes"] = axes
    return dict(op=("convolve", "correlate")[i % 2], x=x, k=k, opts=opts)


def _cases(n: int = 160, seed: int = 12):
    rng = np.random.default_rng(seed)
    return [_case(rng, i) for i in range(n)]


def _operands(case):
    plan = plan_call(case["op"], case["x"], case["k"], **case["opts"])
    nb = get_backend("numpy")
    x, w = nb.operands(plan, case["x"], case["k"])
    return plan, nb, np.ascontiguousarray(x), np.ascontiguousarray(w)


def _finish(plan, out):
    if plan.flip_conj_result:
        out = np.flip(out, axis=plan.axes)
        out = np.conj(out) if out.dtype.kind == "c" else out
    return np.broadcast_to(out, plan.out_shape).astype(plan.out_dtype)


def _check(case, plan, nb, x, w, raw):
    """``raw`` (the kernel's output in acc dtype) against the reference and the shift-and-add."""
    got = _finish(plan, raw)
    want = reference(case["op"], case["x"], case["k"], **{k: v for k, v in case["opts"].items()
                                                          if k != "method"})
    assert got.shape == want.shape
    if plan.out_dtype.kind in "biu":
        np.testing.assert_array_equal(got, want, strict=True)
        return
    with np.errstate(all="ignore"):
        shift_add = np.ascontiguousarray(ArrayBackend.direct(nb, plan, x, w))
    if raw.dtype.kind == "f":
        # the kernel's products and order are the shift-and-add's: bitwise equal (signed zeros,
        # NaN). Not for complex: NumPy's complex product uses FMA on AVX-512 hosts
        u = f"u{raw.dtype.itemsize}"
        np.testing.assert_array_equal(np.ascontiguousarray(raw).view(u), shift_add.view(u))
    else:
        np.testing.assert_array_equal(np.isnan(raw), np.isnan(shift_add))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = np.isfinite(want)
    scale = np.abs(want[fin]).max(initial=1.0)
    tol = 1e-4 if plan.acc_dtype in (np.float32, np.complex64) else 1e-12
    np.testing.assert_allclose(got[fin], want[fin], rtol=0, atol=tol * scale * plan.taps)


@pytest.mark.parametrize("i", range(160))
def test_python_rendering_matches_reference(i):
    case = _cases()[i]
    plan, nb, x, w = _operands(case)
    run = ck.direct_kernel_python(*ck.params_of(plan))
    _check(case, plan, nb, x, w, run(x, w, plan.fillvalue if plan.boundary == "constant" else 0))


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_wraparound_full_range(dtype):
    """Full-range integers (overflow on nearly every product): exact modulo 2**bits."""
    rng = np.random.default_rng(5)
    x, k = random_array(rng, (9, 7), dtype), random_array(rng, (3, 4), dtype)
    case = dict(op="convolve", x=x, k=k, opts=dict(mode="full", boundary="wrap", method="direct"))
    plan, nb, xo, wo = _operands(case)
    run = ck.direct_kernel_python(*ck.params_of(plan))
    _check(case, plan, nb, xo, wo, run(xo, wo))


@pytest.mark.parametrize("boundary", ("constant", "symmetric", "reflect", "edge", "wrap"))
def test_huge_pads_match_gather(boundary):
    """Pads near 2**50 (never materialised): same as the bounded-memory gather path."""
    x = np.arange(1, 8, dtype=np.int64)
    k = np.array([3, -1, 2], dtype=np.int64)
    big = 2**50 + 3
    plan = plan_call("correlate", x, k, mode=((big, -big + 5),), stride=2**40 + 1, dilation=3,
                     boundary=boundary, fillvalue=-9)
    nb = get_backend("numpy")
    xo, wo = nb.operands(plan, x, k)
    want = nb.gather_direct(plan, xo, wo)
    got = ck.direct_kernel_python(*ck.params_of(plan))(xo, wo, -9)
    np.testing.assert_array_equal(got, want)


def test_source_is_pure_and_keyed_by_params():
    case = _cases(3)[2]
    plan = plan_call(case["op"], case["x"], case["k"], **case["opts"])
    p = ck.params_of(plan)
    assert ck.direct_kernel_source(*p) == ck.direct_kernel_source(*p)
    other = ck.KernelParams(*p[:-1], "int32" if p.dtype != "int32" else "int64")
    assert ck.direct_kernel_source(*other) != ck.direct_kernel_source(*p)
    src = ck.direct_kernel_source(*p)
    assert src.count("__global__") == 1 and ck.KERNEL_NAME in src


def test_rejects_unsupported():
    with pytest.raises(ValueError):
        ck.direct_kernel_source(1, (0,), (4,), (2,), (5,), ((1, 1),), (1,), (1,), "constant", "float16")
    with pytest.raises(ValueError):
        ck.direct_kernel_source(1, (0,), (4,), (2,), (5,), ((1, 1),), (1,), (1,), "mirror", "int32")


def test_kernel_wanted():
    x = np.ones(8, np.float32)
    plan = plan_call("convolve", x, np.ones(3, np.float32))
    assert not ck.kernel_wanted(plan, np.ones(3, np.float32))
    assert ck.kernel_wanted(plan, np.array([1, 0, 1], np.float32))
    assert ck.kernel_wanted(plan, np.array([1, 1e-300, 1], np.float64))
    assert ck.kernel_wanted(plan, np.array([1, np.nan, 1], np.float32))
    assert ck.kernel_wanted(plan_call("convolve", np.ones(4, int), np.ones(2, int)))


# ----------------------------------------------------------------------------- the CUDA text itself

_STUB = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
struct ck_dim3 { unsigned x, y, z; };
static ck_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
static std::vector<char> ck_read(const char* path) {
    FILE* f = std::fopen(path, "rb");
    if (!f) { std::perror(path); std::exit(2); }
    std::vector<char> buf;
    char tmp[65536];
    size_t n;
    while ((n = std::fread(tmp, 1, sizeof tmp, f)) > 0) buf.insert(buf.end(), tmp, tmp + n);
    std::fclose(f);
    return buf;
}
"""


def _host_program(cases) -> str:
    """Every case's generated kernel (renamed k<i>, in its own namespace for the helpers) and a
    main() that runs case argv[1] on files x.bin w.bin fill.bin -> out.bin, as 1 thread of 1
    block (argv[2] == 0: the grid-stride loop covers every output) or as argv[2] blocks of 3
    threads; argv[3], argv[4]: outputs and output bytes."""
    parts, calls = [_STUB], []
    for i, (p, _) in enumerate(cases):
        src = ck.direct_kernel_source(*p, name=f"k{i}").replace('extern "C" ', "")
        parts.append(f"namespace c{i} {{\n{src}\n}}\n")
        ctype = ck._CTYPES[p.dtype][0]
        nfill = 2 if np.dtype(p.dtype).kind == "c" else 1
        fills = ", ".join(f"(({ctype}*)fl.data())[{j}]" for j in range(nfill))
        calls.append(f"    if (c == {i}) for (unsigned b = 0; b < gridDim.x; ++b) for (unsigned t = 0; "
                     f"t < blockDim.x; ++t) {{ blockIdx.x = b; threadIdx.x = t; "
                     f"c{i}::k{i}(({ctype}*)x.data(), ({ctype}*)w.data(), ({ctype}*)out.data(), "
                     f"{fills}, total); }}")
    parts.append("int main(int argc, char** argv) {\n    int c = std::atoi(argv[1]);\n"
                 "    if (std::atoi(argv[2]) > 0) { gridDim.x = std::atoi(argv[2]); blockDim.x = 3; }\n"
                 "    std::vector<char> x = ck_read(\"x.bin\"), w = ck_read(\"w.bin\");\n"
                 "    std::vector<char> fl = ck_read(\"fill.bin\");\n"
                 "    long long total = std::atoll(argv[3]);\n"
                 "    std::vector<char> out(std::atoll(argv[4]) + 16);\n"
                 + "\n".join(calls) +
                 "\n    FILE* f = std::fopen(\"out.bin\", \"wb\");\n"
                 "    std::fwrite(out.data(), 1, std::atoll(argv[4]), f);\n"
                 "    std::fclose(f);\n    return 0;\n}\n")
    return "\n".join(parts)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed")
def test_cuda_source_runs_on_host(tmp_path):
    """The generated CUDA text, compiled by g++ with the CUDA qualifiers stubbed, executed on
    the host (grid-stride loop over all outputs) gives the reference and shift-and-add results."""
    cases = []
    for case in _cases(60, seed=99):
        plan, nb, x, w = _operands(case)
        cases.append((ck.params_of(plan), (case, plan, nb, x, w)))
    prog = tmp_path / "k.cpp"
    prog.write_text(_host_program(cases))
    exe = tmp_path / "k"
    res = subprocess.run(["g++", "-std=c++14", "-O1", "-ffp-contract=off", "-Wall", "-Wno-unused-variable",
                          "-o", str(exe), str(prog)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]
    for i, (p, (case, plan, nb, x, w)) in enumerate(cases):
        dt = np.dtype(p.dtype)
        fill = plan.fillvalue if plan.boundary == "constant" else 0
        if dt.kind == "c":
            real = np.dtype(dt.char.lower())
            fill_b = np.array([complex(fill).real, complex(fill).imag], real).tobytes()
        else:
            fill_b = np.array([fill], np.uint8 if dt.kind == "b" else dt).tobytes()
        for name, data in (("x.bin", x.tobytes()), ("w.bin", w.tobytes()), ("fill.bin", fill_b)):
            (tmp_path / name).write_bytes(data)
        total = math.prod(p.out_shape)
        nbytes = total * dt.itemsize
        launch = ["0" if i % 2 else "2"]  # odd: one thread; even: 2 blocks of 3 threads
        subprocess.run([str(exe), str(i), *launch, str(total), str(nbytes)], cwd=tmp_path, check=True)
        raw = np.frombuffer((tmp_path / "out.bin").read_bytes(), dtype=np.uint8 if dt.kind == "b" else dt)
        raw = raw.astype(bool) if dt.kind == "b" else raw
        _check(case, plan, nb, x, w, raw.reshape(p.out_shape))


def _nvcc() -> str | None:
    for path in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if path and os.path.exists(path):
            return path
    return None


@pytest.mark.skipif(_nvcc() is None, reason="nvcc is not installed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("boundary", ("constant", "symmetric", "reflect", "edge", "wrap"))
def test_cuda_source_compiles_with_nvcc(tmp_path, dtype, boundary):
    src = ck.direct_kernel_source(3, (0, 2), (4, 5, 6), (2, 1, 3), (5, 5, 4), ((1, 0), (2, -1)), (1, 2),
                                  (1, 2), boundary, dtype)
    path = tmp_path / "k.cu"
    path.write_text(src)
    res = subprocess.run([_nvcc(), "-ptx", "--fmad=false", "-o", str(tmp_path / "k.ptx"), str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-4000:]
    assert ck.KERNEL_NAME in (tmp_path / "k.ptx").read_text()


class _FakeKernel:
    def __init__(self, source, name, options=()):
        self.source, self.name, self.options, self.calls = source, name, options, []

    def __call__(self, grid, block, args):
        self.calls.append((grid, block, args))


class _FakeCupy:
    """Enough of cupy for run_direct_kernel's marshalling (NumPy arrays; the launch recorded)."""

    class cuda:  # noqa: N801
        class Device:
            id = 0

    RawKernel = _FakeKernel
    ascontiguousarray = staticmethod(np.ascontiguousarray)
    empty = staticmethod(np.empty)


@pytest.mark.parametrize("dtype", ("int16", "bool", "complex64", "float64"))
def test_run_direct_kernel_launch_arguments(dtype):
    ck._CACHE.clear()
    x = np.ones((6, 5), dtype)
    fill = {"b": True, "i": 2, "c": 1 - 1j, "f": 0.5}[np.dtype(dtype).kind]
    plan = plan_call("convolve", x, np.ones((2, 3), dtype), boundary="fill", fillvalue=fill)
    out = ck.run_direct_kernel(_FakeCupy, plan, x, np.ones((2, 3), dtype))
    assert out.shape == plan.out_shape and out.dtype == plan.acc_dtype
    (kern,) = ck._CACHE.values()
    assert kern.name == ck.KERNEL_NAME and kern.options == ck.NVRTC_OPTIONS
    assert kern.source == ck.direct_kernel_source(*ck.params_of(plan))
    ((grid, block, args),) = kern.calls
    assert block == (ck.BLOCK,) and grid[0] * ck.BLOCK >= math.prod(plan.out_shape)
    assert args[-1] == math.prod(plan.out_shape) and isinstance(args[-1], np.int64)
    scalars = args[3:-1]
    if np.dtype(dtype).kind == "c":
        assert [type(s) for s in scalars] == [np.float32, np.float32] and scalars == (1, -1)
    elif dtype == "bool":
        assert scalars == (np.uint8(1),) and isinstance(scalars[0], np.uint8)
    else:
        assert isinstance(scalars[0], np.dtype(dtype).type) and scalars[0] == fill
    ck.run_direct_kernel(_FakeCupy, plan, x, np.ones((2, 3), dtype))
    assert len(ck._CACHE) == 1  # compiled once per source

"""Test helpers: the same values in other memory layouts (byte order, Fortran order, negative
strides, slices, unaligned and read-only buffers), and running a runner on them.

Used by tests/test_input_layouts.py and the property grid of tests/test_properties.py. Each
transform returns an array with the same values and shape as its input; :func:`native` is the
oracle's view of any of them (a native-order, C-contiguous, aligned, writeable copy).
"""

from __future__ import annotations

import numpy as np
from reference import assert_matches, reference, result_dtype

from convkit import ConvkitValueError

__all__ = ["native", "swapped", "fortran", "negative", "strided", "unaligned", "readonly", "layout",
           "LAYOUTS", "PROPERTY_LAYOUTS", "snapshot", "assert_unchanged", "device_ready", "run"]


def native(a) -> np.ndarray:
    """A native-byte-order, C-contiguous, aligned, writeable copy (the oracle's input)."""
    a = np.asarray(a)
    return np.array(a, dtype=a.dtype.newbyteorder("="), order="C")


def swapped(a: np.ndarray) -> np.ndarray:
    """Same values in the other byte order (a no-op for 1-byte types)."""
    return a.astype(a.dtype.newbyteorder("S"))


def fortran(a: np.ndarray) -> np.ndarray:
    return np.array(a, order="F")  # (np.asfortranarray would turn 0-d into 1-d)


def negative(a: np.ndarray) -> np.ndarray:
    """Negative strides on every axis."""
    if a.ndim == 0:
        return a.copy()
    out = np.flip(np.flip(a).copy(order="K"))
    assert all(s <= 0 for s, n in zip(out.strides, out.shape) if n > 1)
    return out


def strided(a: np.ndarray) -> np.ndarray:
    """``buf[::2]``: every other row of a buffer whose other rows hold garbage (99)."""
    if a.ndim == 0:
        return a.copy()
    buf = np.empty((2 * a.shape[0],) + a.shape[1:], dtype=a.dtype)
    buf[...] = np.array(99).astype(a.dtype)
    buf[::2] = a
    return buf[::2]


def unaligned(a: np.ndarray) -> np.ndarray:
    """A copy in a buffer at byte offset 1 (misaligned for itemsize > 1)."""
    n = a.size
    out = np.frombuffer(bytearray(n * a.itemsize + 1), dtype=a.dtype, offset=1, count=n).reshape(a.shape)
    out[...] = a
    assert a.itemsize == 1 or n == 0 or not out.flags.aligned
    return out


def readonly(a: np.ndarray) -> np.ndarray:
    out = a.view()
    out.flags.writeable = False
    return out


TRANSFORMS = {"native": lambda a: a.copy(), "swapped": swapped, "fortran": fortran, "negative": negative,
              "strided": strided, "unaligned": unaligned, "readonly": readonly}
LAYOUTS = ("native", "swapped", "fortran", "negative", "strided", "unaligned", "readonly",
           "swapped+fortran", "swapped+negative", "swapped+unaligned", "strided+readonly",
           "swapped+strided+readonly", "fortran+negative")
#: what the property grid of tests/test_properties.py draws (native most often: the grid's own coverage)
PROPERTY_LAYOUTS = ("native",) * 4 + ("swapped", "fortran", "negative", "readonly", "swapped+fortran",
                                       "swapped+negative", "strided+readonly", "unaligned")


def layout(a, name: str) -> np.ndarray:
    """``a`` (any array) in the layout ``name`` ('+'-joined transforms, applied left to right)."""
    out = np.array(a)
    for t in name.split("+"):
        out = TRANSFORMS[t](out)
    np.testing.assert_array_equal(out, a, strict=False)
    return out


def snapshot(a: np.ndarray):
    """What :func:`assert_unchanged` compares."""
    return a.dtype, a.shape, a.strides, a.flags.writeable, a.copy()


def assert_unchanged(a: np.ndarray, snap) -> None:
    """convkit did not write to (or re-type) an input."""
    dt, shape, strides, writeable, values = snap
    now = a.dtype, a.shape, a.strides, a.flags.writeable
    assert now == (dt, shape, strides, writeable), f"convkit changed an input's {now} (was {snap[:4]})"
    np.testing.assert_array_equal(a, values, strict=True, err_msg="convkit modified its input")


def device_ready(runner, x):
    """Device runners: a byte-swapped array becomes native (JAX/CuPy arrays are native-endian)."""
    if runner.to_device is not None and not np.asarray(x).dtype.isnative:
        return native(x)
    return x


def run(runner, op, a, b, *args, **kw) -> np.ndarray:
    """``runner.run`` on host arrays in any layout (see :func:`device_ready`)."""
    return runner.run(op, device_ready(runner, a), device_ready(runner, b), *args, **kw)


def run_beside_device(runner, op, a, b, *args, **kw) -> np.ndarray:
    """A device runner with one input on the device and the other, byte-swapped or not, as a
    host array beside it (S11: host data next to a device array is converted like host data).
    The host array is closed over, not a jit argument: JAX's jit would convert it itself."""
    import convkit
    from convkit.testing import to_numpy

    fn = getattr(convkit, op)
    on_device_first = np.asarray(a).dtype.isnative
    dev = runner.to_device(native(a if on_device_first else b))
    host = b if on_device_first else a

    def call(d, _unused):
        return fn(d, host, *args, **kw) if on_device_first else fn(host, d, *args, **kw)

    if runner.wrap is not None:
        call = runner.wrap(call)
    return to_numpy(call(dev, dev))


def check_against_reference(runner, op, a, b, mode="full", *, method="auto", **kw) -> None:
    """``runner``'s result for (a, b) in their layouts equals the exact reference on native
    copies (dtype and values), its dtype is native, and a, b are unchanged."""
    a0, b0 = native(a), native(b)
    snaps = snapshot(a), snapshot(b)
    try:
        expected = reference(op, a0, b0, mode, **kw)
    except ValueError:
        expected = None
    try:
        got = run(runner, op, a, b, mode, method=method, **kw)
    except ConvkitValueError as exc:
        if expected is None:
            return  # both refuse (S3)
        # S5: an explicit FFT on integers may refuse when it cannot be exact, never round
        if method in ("fft", "oa") and result_dtype(a0, b0).kind in "biu" and "exact" in str(exc):
            return
        raise
    finally:
        assert_unchanged(a, snaps[0])
        assert_unchanged(b, snaps[1])
    assert expected is not None, f"convkit accepted a call the SPEC rejects: {op} {mode} {kw}"
    assert got.dtype.isnative, f"result dtype {got.dtype.str} is not native byte order (S4)"
    assert_matches(got, expected, a0, b0, op, method=method, mode=mode, **kw)

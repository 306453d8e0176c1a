"""The C allocator in its steady state for timing (glibc's ``malloc``), whatever ran before.

glibc serves a block above its *mmap threshold* (128 KiB at start) with a fresh ``mmap`` and
returns it to the system when it is freed, and it shrinks the heap when its free top exceeds
the *trim threshold*. Fresh memory costs a page fault per 4 KiB page on first touch. Both
thresholds grow with the largest block freed so far, so the same call on the same data is
several times slower in a fresh process than in one that freed a large block earlier
(``scipy.signal.oaconvolve``, 1e5 x 65 float64: 3.0 ms fresh, 0.84 ms after one 2000x2000
FFT in the same process, on the 2-core development VM). A timing would then measure the
history of its process (which workloads ran before it) more than the call.

:func:`steady` fixes the thresholds high, as a long-running program reaches them anyway: freed
memory is reused without new page faults for blocks up to 32 MiB (glibc's largest mmap
threshold). Every contender's worker process calls it before timing (docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["steady"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

_MMAP_THRESHOLD = 32 << 20   # glibc's largest accepted value on 64-bit systems
_TRIM_THRESHOLD = 512 << 20
_TOP_PAD = 64 << 20


def steady() -> str:
    """Set glibc's mmap threshold to 32 MiB and its trim threshold to 512 MiB in this process;
    return what was set ("" where the C library is not glibc, which then runs as it is)."""
    if not sys.platform.startswith("linux"):
        return ""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return ""
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (_M_TOP_PAD, _TOP_PAD)))
    return "glibc malloc: mmap threshold 32 MiB, trim threshold 512 MiB" if ok else ""

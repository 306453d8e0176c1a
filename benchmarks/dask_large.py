"""Larger-than-memory convolution with Dask (issue #6).

A ``size x size`` float32 image (20000 x 20000 = 1.6 GB by default), generated lazily in
chunks on the workers, is correlated with a random kernel on a ``dask.distributed``
LocalCluster whose workers together may hold less memory than the input alone. The run
reduces the output to its sum (so nothing the size of the image is ever gathered) and
computes a few output tiles in the same graph; each tile is checked against the NumPy
backend run on the input tile plus its halo (corners touch the boundary rule, the others
straddle chunk boundaries), within the S5 bound.

    python -m benchmarks.dask_large [--size 20000] [--chunk 2000] [--kernel 9]
                                    [--workers 2] [--memory-limit 0.75GiB] [--json out.json]

Prints wall time, throughput, the per-worker peak memory (sampled) and the checks.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import threading
import time

import numpy as np


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class _PeakSampler:
    """Samples every worker's RSS in a background thread; keeps the per-worker peak."""

    def __init__(self, client, period: float = 0.25):
        self.client, self.period = client, period
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            try:
                for addr, rss in self.client.run(_rss).items():
                    self.peak[addr] = max(self.peak.get(addr, 0), rss)
            except Exception:  # a worker restarting must not kill the sampler
                pass
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _warm_up(kernel: int) -> None:
    import convkit

    for m in ("direct", "fft"):
        convkit.correlate(np.ones((64, 64), np.float32), np.ones((kernel, kernel), np.float32), "valid",
                          method=m)


def _tile_slices(size: int, chunk: int, n_out: int, tile: int):
    """Output tiles to check: two corners and two that straddle chunk boundaries."""
    c = min(chunk, n_out // 2)
    starts = [(0, 0), (n_out - tile, n_out - tile), (c - tile // 2, c - tile // 2),
              (min(3 * c, n_out - tile) - tile // 2, c - 1)]
    return [(slice(max(r, 0), max(r, 0) + tile), slice(max(q, 0), max(q, 0) + tile)) for r, q in starts]


def _oracle_tile(x, k, plan, rows: slice, cols: slice, op: str, boundary: str):
    """The NumPy backend on the input tile plus its halo: explicit pads where the tile
    reaches past the image edge (the boundary rule then only needs the region itself)."""
    import convkit

    region, pads = [], []
    for (lo, _hi), n, me, s, sl in zip(plan.pads, x.shape, plan.effective_kernel, plan.stride, (rows, cols)):
        p0 = sl.start * s - lo  # first padded-input position, in input coordinates
        p1 = (sl.stop - 1) * s + me - lo  # one past the last
        a, b = max(p0, 0), min(p1, n)
        region.append(slice(a, b))
        pads.append((a - p0, p1 - b))
    xr = x[tuple(region)].compute()
    fn = getattr(convkit, op)
    ref64 = fn(xr.astype(np.float64), k.astype(np.float64), tuple(pads), boundary=boundary,
               stride=plan.stride, backend="numpy")
    ref = fn(xr, k, tuple(pads), boundary=boundary, stride=plan.stride, backend="numpy")
    return xr, tuple(pads), ref64, ref


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dask_large", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=20000, help="image side (default 20000: 1.6 GB float32)")
    p.add_argument("--chunk", type=int, default=2000, help="chunk side (default 2000)")
    p.add_argument("--kernel", type=int, default=9, help="kernel side (default 9)")
    p.add_argument("--mode", default="same")
    p.add_argument("--boundary", default="symm")
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--op", default="correlate", choices=("convolve", "correlate"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="0.75GiB", help="per worker (default 0.75GiB)")
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    import dask
    import dask.array as da
    import distributed
    from dask.utils import format_bytes, parse_bytes

    import convkit
    from convkit.testing import assert_conv_close

    n, dtype = args.size, np.float32
    x = da.random.default_rng(2026).random((n, n), chunks=args.chunk, dtype=dtype)
    k = np.random.default_rng(7).standard_normal((args.kernel, args.kernel)).astype(dtype)
    out = getattr(convkit, args.op)(x, k, args.mode, boundary=args.boundary, stride=args.stride)
    plan = convkit.plan.make_plan(
        args.op, x.shape, k.shape, x.dtype, k.dtype,
        convkit.options.make_options(mode=args.mode, boundary=args.boundary, stride=args.stride),
        convkit.get_backend("numpy").capabilities)
    tiles = _tile_slices(n, args.chunk, min(out.shape), min(args.tile, min(out.shape)))
    limit = parse_bytes(args.memory_limit)
    in_bytes = x.nbytes
    print(f"input {n}x{n} {np.dtype(dtype).name} = {format_bytes(in_bytes)} in {x.numblocks[0]}x"
          f"{x.numblocks[1]} chunks of {args.chunk}; kernel {k.shape}; {args.op} mode={args.mode!r} "
          f"boundary={args.boundary!r} stride={args.stride}; output {out.shape} = {format_bytes(out.nbytes)}")
    print(f"cluster: {args.workers} worker processes x 1 thread, memory_limit {format_bytes(limit)} each "
          f"({format_bytes(limit * args.workers)} in all); graph {len(out.__dask_graph__())} tasks")

    with dask.config.set({"distributed.worker.memory.spill": 0.7, "distributed.worker.memory.target": 0.6}):
        with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None, memory_limit=limit) as cl, \
                distributed.Client(cl) as client:
            client.run(_warm_up, args.kernel)  # imports (SciPy, convkit) outside the timing
            with _PeakSampler(client) as sampler:
                t0 = time.perf_counter()
                total, *got = dask.compute(out.sum(dtype=np.float64), *(out[r, c] for r, c in tiles))
                wall = time.perf_counter() - t0
            peaks = dict(sampler.peak)

            checks = []
            for (r, c), tile in zip(tiles, got):
                xr, pads, ref64, ref = _oracle_tile(x, k, plan, r, c, args.op, args.boundary)
                assert_conv_close(tile, ref64, xr, k, args.op, mode=pads, boundary=args.boundary,
                                  stride=plan.stride, check_dtype=False)
                assert tile.dtype == ref.dtype
                checks.append({"rows": [r.start, r.stop], "cols": [c.start, c.stop], "pads": pads,
                               "max_abs_diff_vs_numpy_backend": float(np.max(np.abs(tile - ref)))})

    result = {
        "size": n, "chunk": args.chunk, "kernel": args.kernel, "dtype": np.dtype(dtype).name, "op": args.op,
        "mode": args.mode, "boundary": args.boundary, "stride": args.stride, "input_bytes": in_bytes,
        "output_shape": list(out.shape), "workers": args.workers, "memory_limit_per_worker": limit,
        "wall_s": wall, "mpix_per_s": n * n / wall / 1e6, "peak_worker_rss": peaks,
        "peak_worker_rss_max": max(peaks.values()) if peaks else None, "output_sum": float(total),
        "tiles_checked": checks, "machine": platform.platform(), "python": platform.python_version(),
        "versions": {"numpy": np.__version__, "dask": dask.__version__,
                     "distributed": distributed.__version__, "convkit": convkit.__version__},
    }
    print(f"wall {wall:.1f} s, {result['mpix_per_s']:.1f} Mpix/s; peak worker RSS "
          + ", ".join(format_bytes(v) for v in peaks.values())
          + f" (limit {format_bytes(limit)} each; input alone {format_bytes(in_bytes)})")
    for ch in checks:
        print(f"tile rows {ch['rows']} cols {ch['cols']} pads {ch['pads']}: within S5 of the float64 oracle; "
              f"max |dask - numpy backend| = {ch['max_abs_diff_vs_numpy_backend']:.3g}")
    if not math.isfinite(total):
        raise SystemExit("output sum is not finite")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()

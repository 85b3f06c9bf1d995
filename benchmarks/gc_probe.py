"""A gunicorn configuration for benchmarks/serve.py: each worker times its garbage
collections, by generation, and as it exits writes how many there were, their total and the
longest to `$GC_PROBE_DIR/<pid>.json`. It measures the server and changes nothing it serves
(two clock reads a collection)."""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Any

# Per generation (0 young, 1 middle, 2 full): [collections, seconds in all, longest].
Stats = dict[int, list[float]]


def post_worker_init(worker: Any) -> None:
    stats: Stats = {generation: [0, 0.0, 0.0] for generation in range(3)}
    started = 0.0

    def timed(phase: str, info: dict[str, int]) -> None:
        # A collection holds the GIL from start to stop, so one clock reading at a time.
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
            return
        pause = time.perf_counter() - started
        counts = stats[info["generation"]]
        counts[0] += 1
        counts[1] += pause
        counts[2] = max(counts[2], pause)

    gc.callbacks.append(timed)
    worker.gc_stats = stats


def worker_exit(server: Any, worker: Any) -> None:
    stats = getattr(worker, "gc_stats", None)
    if stats is not None:
        (Path(os.environ["GC_PROBE_DIR"]) / f"{os.getpid()}.json").write_text(json.dumps(stats))


def summary(directory: Path) -> str:
    """The workers' collections together: how many of each generation, their mean and the
    longest, in ms."""
    total: Stats = {generation: [0, 0.0, 0.0] for generation in range(3)}
    for path in directory.glob("*.json"):
        for generation, (count, seconds, longest) in json.loads(path.read_text()).items():
            counts = total[int(generation)]
            counts[0] += count
            counts[1] += seconds
            counts[2] = max(counts[2], longest)
    parts = []
    for generation, name in enumerate(("young", "middle", "full")):
        count, seconds, longest = total[generation]
        mean = 1000 * seconds / count if count else 0.0
        parts.append(f"{name} {count:,.0f} (mean {mean:.2f} ms, longest {1000 * longest:.1f})")
    return ", ".join(parts)

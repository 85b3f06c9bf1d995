"""What it costs one Python thread to wake another, on the same CPU and on another: why a
serving process runs on one CPU (`web._one_cpu`).

Two threads hand a turn back and forth through two locks, as a worker's threads do all the
time (gunicorn's main thread and its pool, a request and the decision log's writer, and the
GIL itself): each releases the lock the other waits on, then waits on its own. Printed, for
both threads on one CPU and for each on a CPU of its own: the round trip's wall time, the
CPU both threads used for it, and how long the waking thread spent in the release itself,
holding the GIL. The same-CPU figures are the floor.

    python benchmarks/wake.py [--rounds 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time


def trip(cpus: tuple[int, int], rounds: int) -> tuple[float, float, float]:
    """(wall µs a round trip, CPU µs a round trip, µs a release), the two threads pinned
    to `cpus` (the same CPU twice, or two)."""
    ping, pong = threading.Lock(), threading.Lock()
    ping.acquire()
    pong.acquire()

    def answer() -> None:
        os.sched_setaffinity(threading.get_native_id(), {cpus[1]})
        for _ in range(rounds):
            ping.acquire()
            pong.release()

    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    other = threading.Thread(target=answer)
    other.start()
    try:
        releasing = 0.0
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            mark = time.perf_counter()
            ping.release()
            releasing += time.perf_counter() - mark
            pong.acquire()
        wall, used = time.perf_counter() - started, time.process_time() - cpu
    finally:
        other.join()
        os.sched_setaffinity(0, before)
    return wall / rounds * 1e6, used / rounds * 1e6, releasing / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("needs two CPUs to compare with one")
    runs: dict[str, list[tuple[float, float, float]]] = {"same CPU": [], "two CPUs": []}
    for _ in range(args.repeats):  # interleaved: the machine's load moves between runs
        runs["same CPU"].append(trip((cpus[0], cpus[0]), args.rounds))
        runs["two CPUs"].append(trip((cpus[0], cpus[1]), args.rounds))
    print(
        f"a thread waking another and waited back, {args.rounds} round trips, median of "
        f"{args.repeats} interleaved runs, {len(cpus)} CPUs:"
    )
    print(f"  {'':10} {'wall µs':>9} {'CPU µs':>9} {'release µs':>11}")
    same, two = ([statistics.median(r[i] for r in runs[k]) for i in range(3)] for k in runs)
    for label, (wall, used, release) in (("same CPU", same), ("two CPUs", two)):
        print(f"  {label:10} {wall:9.1f} {used:9.1f} {release:11.2f}")
    wall, used, release = (b / a for a, b in zip(same, two, strict=True))
    print(f"  {'two ÷ same':10} {wall:9.2f} {used:9.2f} {release:11.2f}")


if __name__ == "__main__":
    main()

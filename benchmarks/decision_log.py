"""The decision log's write cost on SQLite, outside the server, in CPU per decision row:

    page       40-row writes (a page's decisions) through `GroupCommitLog.write`, on the
               shipped schema and on a copy without the per-title index `ix_decisions_slot`
    single     one-row writes through `GroupCommitLog.write` (handed to the writer thread,
               which commits and wakes the caller), and the same commits made by the
               calling thread itself with the writer's own steps (`_connect`, `_insert`):
               what the hand-off costs

The decisions are real ones, drawn by `bandit.decisions.choose` from a trained policy over a
40-title catalog. The four runs are interleaved and repeated; each ratio is taken within a
round, then its median printed, as in `benchmarks/serve.py`.

    python benchmarks/decision_log.py [--pages 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bandit.config import DEFAULT_EXPLORATION, DEFAULT_VW_ARGS  # noqa: E402
from bandit.decision_log import GroupCommitLog  # noqa: E402
from bandit.decisions import DecisionRecord, DecisionRequest, choose, logged_candidates  # noqa: E402
from bandit.features import Candidate, context_text  # noqa: E402
from bandit.policy import Policy  # noqa: E402
from web.db import make_engine, upgrade  # noqa: E402

TITLES = 40
SEGMENTS = ["teen-scifi", "family", "crime-buffs", "romance", "documentary"]


class Pages:
    """A trained policy over a 40-title catalog, and fresh pages of decisions from it."""

    def __init__(self, seed: int = 3) -> None:
        self.rng = random.Random(seed)
        self.policy = Policy(DEFAULT_VW_ARGS)
        self.titles = []
        for t in range(TITLES):
            candidates = [
                Candidate(f"t{t}-v{k}", {"tags": [f"look{k}", "dark"], "brightness": 0.3 * k})
                for k in range(3)
            ]
            features = {"title": f"title-{t}", "genres": ["drama", f"g{t % 5}"]}
            self.titles.append(
                (
                    f"title-{t}",
                    candidates,
                    features,
                    context_text(features),
                    logged_candidates(candidates),
                )
            )
        for _ in range(2000):
            _, candidates, features, _, _ = self.rng.choice(self.titles)
            clicked = self.rng.random() < 0.1
            self.policy.learn(
                self._context(), features, candidates, self.rng.randrange(3), -float(clicked), 1 / 3
            )
        self.policy.slot_examples = {slot: 10_000 for slot, *_ in self.titles}

    def _context(self) -> dict[str, object]:
        return {
            "segment": self.rng.choice(SEGMENTS),
            "device": self.rng.choice(["tv", "web", "phone"]),
            "hour": self.rng.randrange(24),
        }

    def page(self, titles: int = TITLES) -> list[DecisionRecord]:
        context, user = self._context(), f"viewer-{self.rng.randrange(100_000)}"
        requests = [
            DecisionRequest(
                slot=slot,
                candidates=candidates,
                context=context,
                slot_features=features,
                user=user,
                slot_tokens=tokens,
                logged=logged,
            )
            for slot, candidates, features, tokens, logged in self.rng.sample(self.titles, titles)
        ]
        return choose(self.policy, requests, self.rng, exploration=DEFAULT_EXPLORATION)


def fresh_log(work: Path, name: str, *, slot_index: bool = True) -> GroupCommitLog:
    url = f"sqlite:///{work / name}.db"
    engine = make_engine(url)
    upgrade(engine)
    if not slot_index:
        with engine.begin() as connection:
            connection.execute(text("DROP INDEX ix_decisions_slot"))
    engine.dispose()
    return GroupCommitLog(make_engine(url))


def cpu_per_row(
    writes: list[list[DecisionRecord]], write: Callable[[list[DecisionRecord]], None]
) -> float:
    """CPU seconds of this process (every thread) per decision row, in µs."""
    rows = sum(len(records) for records in writes)
    start = time.process_time()
    for records in writes:
        write(records)
    return (time.process_time() - start) / rows * 1e6


def direct_writer(log: GroupCommitLog) -> Callable[[list[DecisionRecord]], None]:
    """The commit `GroupCommitLog`'s writer thread makes, made by the calling thread: the same
    connection set-up, statement and commit, without the hand-off to the writer and back."""
    connection = log._connect()

    def write(records: list[DecisionRecord]) -> None:
        log._insert(connection, [log._encode(record) for record in records], {})
        log._checkpoint(connection)

    return write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=300, help="40-row writes per run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    source = Pages()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="keyart-log-bench-") as folder:
        work = Path(folder)
        for round_ in range(args.rounds):
            logs = {
                "page, shipped schema": fresh_log(work, f"shipped-{round_}"),
                "page, no per-title index": fresh_log(work, f"no-slot-{round_}", slot_index=False),
                "single, via the writer thread": fresh_log(work, f"handoff-{round_}"),
                "single, in the calling thread": fresh_log(work, f"direct-{round_}"),
            }
            for label, log in logs.items():
                single = label.startswith("single")
                count = args.pages * (TITLES // 4 if single else 1)
                writes = [source.page(1 if single else TITLES) for _ in range(count)]
                # Candidate sets are written once per log: store them before the measured run.
                log.write(source.page(TITLES))
                write = direct_writer(log) if label.endswith("calling thread") else log.write
                results.setdefault(label, []).append(cpu_per_row(writes, write))
                log.stop(timeout=10)
            print(f"  round {round_ + 1} of {args.rounds} done", flush=True)

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(a / b for a, b in zip(results[top], results[bottom], strict=True))

    print(
        "\nSQLite decision log, CPU µs per decision row,"
        f" median of {args.rounds} interleaved rounds"
    )
    for label, values in results.items():
        spread = f"{min(values):.0f}–{max(values):.0f}"
        print(f"  {label:32} {statistics.median(values):7.1f}   (rounds: {spread})")
    print("\n  ratios (per round, median)")
    print(
        f"  {'page without ÷ with the per-title index':44}"
        f" {ratio('page, no per-title index', 'page, shipped schema'):5.2f}"
    )
    print(
        f"  {'single via the writer ÷ in the calling thread':44}"
        f" {ratio('single, via the writer thread', 'single, in the calling thread'):5.2f}"
    )


if __name__ == "__main__":
    main()

"""The decision log's costs, outside the server, through the log a serving process writes
through (`web.make_decision_log`: its statements, catalog guard and commit delay):

    page       CPU per decision row of 40-row writes (a page's decisions) through
               `GroupCommitLog.write`, on SQLite, on the shipped schema and on a copy without
               the per-title index `ix_decisions_slot`; and the same commits made by the
               calling thread with the writer's own steps: the database's part alone
    single     CPU per row of one-row writes through `GroupCommitLog.write` (handed to the
               writer thread, which commits and wakes the caller), and the same commits
               made by the calling thread itself with the writer's own steps (`_connect`,
               `_insert`): what the hand-off costs
    reports    what the index buys: wall time of a title's report reads
               (`bandit.report.action_report` and `logged_outcomes`,
               `bandit.serving_mode.serving_mode`) on a log of `--log-decisions` decisions
               spread over 40 titles and over `--many-titles`, with the index and without,
               on SQLite and (with `--postgres URL`) on PostgreSQL

The decisions are real ones, drawn by `bandit.decisions.choose` from a trained policy over a
40-title catalog (the reports' log repeats 250 such pages under new event ids, with a click
on one decision in 20; for `--many-titles`, under as many title ids). The runs are
interleaved and repeated; each ratio is taken within a round, then its median printed, as
in `benchmarks/serve.py`.

    python benchmarks/decision_log.py [--pages 300] [--rounds 3] [--log-decisions 1000000]
        [--many-titles 1000] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--only writes|reports]

With `--postgres`, the reports' log is built in a database of its own on that server
(`keyart_decision_log_…`, dropped afterwards).
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bandit.config import DEFAULT_EXPLORATION, DEFAULT_VW_ARGS  # noqa: E402
from bandit.decision_log import _COLUMNS, GroupCommitLog, _Entry  # noqa: E402
from bandit.decisions import DecisionRecord, DecisionRequest, choose, logged_candidates  # noqa: E402
from bandit.features import Candidate, context_text  # noqa: E402
from bandit.policy import Policy  # noqa: E402
from bandit.report import action_report, logged_outcomes  # noqa: E402
from bandit.serving_mode import serving_mode  # noqa: E402
from web import make_decision_log  # noqa: E402
from web.config import load_settings  # noqa: E402
from web.db import make_engine, scratch_database, upgrade  # noqa: E402
from web.serving_catalog import CATALOG_VERSION  # noqa: E402

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


SLOT_INDEX = "CREATE INDEX ix_decisions_slot ON decisions (slot)"
DROP_SLOT_INDEX = "DROP INDEX ix_decisions_slot"


def fresh_log(work: Path, name: str, *, slot_index: bool = True) -> tuple[GroupCommitLog, int]:
    """The log a serving process writes through (`web.make_decision_log`: its statements,
    catalog guard and commit delay) on a new database, and the catalog version to write with."""
    url = f"sqlite:///{work / name}.db"
    engine = make_engine(url)
    upgrade(engine)
    if not slot_index:
        with engine.begin() as connection:
            connection.execute(text(DROP_SLOT_INDEX))
    with engine.connect() as connection:
        version = connection.execute(text(CATALOG_VERSION)).scalar_one()
    engine.dispose()
    env = {
        "KEYART_DATABASE_URL": url,
        "KEYART_VAR_DIR": str(work),
        "KEYART_SECRET_KEY": "benchmark-secret-key-0123456789",
    }
    return make_decision_log(load_settings(env)), version


def entry(rows: list[tuple[object, ...]], expect: object = None) -> _Entry:
    """Rows as the writer thread takes them from a `write`."""
    return _Entry(rows, threading.Lock(), expect)


def cpu_per_row(
    writes: list[list[DecisionRecord]], write: Callable[[list[DecisionRecord]], None]
) -> float:
    """CPU seconds of this process (every thread) per decision row, in µs."""
    rows = sum(len(records) for records in writes)
    start = time.process_time()
    for records in writes:
        write(records)
    return (time.process_time() - start) / rows * 1e6


def direct_writer(log: GroupCommitLog, version: int) -> Callable[[list[DecisionRecord]], None]:
    """The commit `GroupCommitLog`'s writer thread makes, made by the calling thread: the same
    connection set-up, statement and commit, without the hand-off to the writer and back,
    and the WAL's checkpoints in their thread beside it, as beside the writer (stopped by
    `log.stop`)."""
    connection = log._connect()
    log._start_checkpoints()

    def write(records: list[DecisionRecord]) -> None:
        log._insert(connection, [entry([log._encode(r) for r in records], version)], {})

    return write


def median_ratio(results: dict[str, list[float]], top: str, bottom: str) -> float:
    return statistics.median(a / b for a, b in zip(results[top], results[bottom], strict=True))


def print_results(title: str, results: dict[str, list[float]], unit: str) -> None:
    print(f"\n{title}")
    for label, values in results.items():
        spread = f"{min(values):.{unit}f}–{max(values):.{unit}f}"
        print(f"  {label:46} {statistics.median(values):8.{unit}f}   (rounds: {spread})")


def writes(source: Pages, pages: int, rounds: int) -> None:
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="keyart-log-bench-") as folder:
        work = Path(folder)
        for round_ in range(rounds):
            logs = {
                "page, shipped schema": fresh_log(work, f"shipped-{round_}"),
                "page, no per-title index": fresh_log(work, f"no-slot-{round_}", slot_index=False),
                "page, in the calling thread": fresh_log(work, f"page-direct-{round_}"),
                "single, via the writer thread": fresh_log(work, f"handoff-{round_}"),
                "single, in the calling thread": fresh_log(work, f"direct-{round_}"),
            }
            for label, (log, version) in logs.items():
                single = label.startswith("single")
                count = pages * (TITLES // 4 if single else 1)
                batches = [source.page(1 if single else TITLES) for _ in range(count)]
                # Candidate sets are written once per log: store them before the measured run.
                log.write(source.page(TITLES), expect=version)

                def write(
                    records: list[DecisionRecord], log: GroupCommitLog = log, version: int = version
                ) -> None:
                    log.write(records, expect=version)

                if label.endswith("calling thread"):
                    # The writer thread closes the lock file when it stops: stopped first,
                    # so that it cannot close it under the calling thread's commits.
                    log.stop(timeout=10)
                    write = direct_writer(log, version)
                results.setdefault(label, []).append(cpu_per_row(batches, write))
                log.stop(timeout=10)
            print(f"  writes: round {round_ + 1} of {rounds} done", flush=True)
    print_results(
        f"SQLite decision log, CPU µs per decision row, median of {rounds} interleaved rounds",
        results,
        "1",
    )
    print("\n  ratios (per round, median)")
    without = median_ratio(results, "page, no per-title index", "page, shipped schema")
    handoff = median_ratio(
        results, "single, via the writer thread", "single, in the calling thread"
    )
    page_handoff = median_ratio(results, "page, shipped schema", "page, in the calling thread")
    print(f"  {'page without ÷ with the per-title index':46} {without:5.2f}")
    print(f"  {'page via the writer ÷ in the calling thread':46} {page_handoff:5.2f}")
    print(f"  {'single via the writer ÷ in the calling thread':46} {handoff:5.2f}")


def build_log(source: Pages, url: str, decisions: int, titles: int) -> Engine:
    """A log of `decisions` real decisions (250 pages of them, repeated under new event ids
    and, past 40 titles, under `titles` // 40 names for each title) written by the
    group-commit writer's own statements, and a click for one in 20."""
    engine = make_engine(url)
    upgrade(engine)
    log = GroupCommitLog(engine)
    log.write(source.page(TITLES))  # the candidate sets, once
    log.stop(timeout=10)  # rows are inserted by this thread (see `writes`)
    templates = [log._encode(record) for _ in range(250) for record in source.page(TITLES)]
    event, slot = _COLUMNS.index("event_id"), _COLUMNS.index("slot")
    names = max(1, titles // TITLES)
    connection = log._connect()
    clicks: list[dict[str, object]] = []
    draw = random.Random(5)
    for start in range(0, decisions, 2000):
        rows = []
        for k in range(start, min(decisions, start + 2000)):
            row = list(templates[k % len(templates)])
            row[event] = uuid.uuid4().hex
            if names > 1:
                row[slot] = f"{row[slot]}~{k // len(templates) % names}"
            rows.append(tuple(row))
            if draw.random() < 0.05:
                clicks.append({"event_id": row[event], "type": "click", "late": False})
        log._insert(connection, [entry(rows)], {})
    connection.close()
    with engine.begin() as db:
        db.execute(
            text(
                "INSERT INTO rewards (event_id, type, value, created_at, late)"
                " VALUES (:event_id, :type, 1.0, CURRENT_TIMESTAMP, :late)"
            ),
            clicks,
        )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
            db.execute(text("VACUUM ANALYZE"))
    return engine


def time_reports(source: Pages, engine: Engine, titles: int) -> dict[str, float]:
    """Seconds for each of a title's report reads, on a warm cache (the second of two)."""
    slot, candidates, *_ = source.titles[7]
    if titles > TITLES:
        slot += "~0"
    reads: dict[str, Callable[[Session], object]] = {
        "a title's action report": lambda s: action_report(
            s, slot, source.policy, candidates, default_id=candidates[0].id
        ),
        "a title's logged outcomes": lambda s: logged_outcomes(s, slot),
        "a title's serving mode": lambda s: serving_mode(
            s, slot, source.policy, DEFAULT_EXPLORATION
        ),
    }
    seconds = {}
    with Session(engine) as session:
        for label, read in reads.items():
            read(session)
            start = time.perf_counter()
            read(session)
            seconds[label] = time.perf_counter() - start
    return seconds


def reports(
    source: Pages, decisions: int, many_titles: int, rounds: int, postgres: str | None
) -> None:
    with tempfile.TemporaryDirectory(prefix="keyart-log-bench-") as folder, ExitStack() as stack:
        urls = {"SQLite": f"sqlite:///{Path(folder) / 'reports.db'}"}
        if postgres:
            urls["PostgreSQL"] = stack.enter_context(
                scratch_database(postgres, "keyart_decision_log")
            )
        for (name, url), titles in itertools.product(urls.items(), (TITLES, many_titles)):
            print(f"  reports: {decisions:,} decisions over {titles:,} titles, {name}", flush=True)
            engine = build_log(source, url, decisions, titles)
            results: dict[str, list[float]] = {}
            for _ in range(rounds):
                for index in (True, False):  # the shipped schema has it
                    for label, seconds in time_reports(source, engine, titles).items():
                        key = f"{label}, {'with' if index else 'without'} the index"
                        results.setdefault(key, []).append(seconds)
                    with engine.begin() as db:
                        db.execute(text(DROP_SLOT_INDEX if index else SLOT_INDEX))
            engine.dispose()
            if name == "SQLite":
                Path(url.removeprefix("sqlite:///")).unlink()
            print_results(
                f"{name}: report reads on a log of {decisions:,} decisions over {titles:,}"
                f" titles, seconds, median of {rounds} interleaved rounds",
                results,
                "3",
            )
            print("\n  ratios (per round, median)  without ÷ with the index")
            for label in dict.fromkeys(key.rsplit(", ", 1)[0] for key in results):
                ratio = median_ratio(
                    results, f"{label}, without the index", f"{label}, with the index"
                )
                print(f"  {label:46} {ratio:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=300, help="40-row writes per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log-decisions", type=int, default=1_000_000)
    parser.add_argument("--many-titles", type=int, default=1000)
    parser.add_argument("--postgres", help="a PostgreSQL server's URL, for the reports' log")
    parser.add_argument("--only", choices=["writes", "reports"])
    args = parser.parse_args()
    if args.pages < 1 or args.rounds < 1 or args.log_decisions < 1:
        parser.error("--pages, --rounds and --log-decisions must be at least 1")
    if args.many_titles < 2 * TITLES:
        parser.error(f"--many-titles must be at least {2 * TITLES}")
    source = Pages()
    if args.only != "reports":
        writes(source, args.pages, args.rounds)
    if args.only != "writes":
        reports(source, args.log_decisions, args.many_titles, args.rounds, args.postgres)


if __name__ == "__main__":
    main()

"""Learning throughput: decisions learned per second by keyart's learner from the SQL log,
next to VW's own command-line driver on the same decisions written as DSJSON, in one run.

    python benchmarks/learner.py [--decisions 20000] [--batch 10000] [--repeat 5]
                                 [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
                                 [--only sqlite|postgres]

The log is simulated: 40 titles × 3 variants (tags and image features), viewers in five
segments, each decision drawn by the policy as serving draws it, ~15% clicked. keyart's
figure covers everything a learning pass does: reading decisions and rewards by cursor,
joining, featurising, VW learning (each batch written as VW text and learned by VW's own
driver in its worker process, chained through the saved model, while the next batch is read
and featurised), and committing a snapshot with the cursor per batch.
Also printed: the time only to read the same rows from SQL (the learner's own query), a
floor under any learner that starts from the database. VW's figure is
`vowpal_wabbit_next.run_cli_driver` with the same arguments and `--dsjson` (parsing JSON in
C++ and learning; no database, no snapshots), with and without its parser thread; the ratio
is against the faster of the two. Each figure is the best of `--repeat` runs, the two sides
interleaved; the round-by-round ratios are printed too. Target: ≥ 0.5.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shlex
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import vowpal_wabbit_next as vw  # noqa: E402

from bandit.config import ExplorationConfig  # noqa: E402
from bandit.decision_log import decision_row  # noqa: E402
from bandit.decisions import DecisionRequest, choose, store_candidate_sets  # noqa: E402
from bandit.features import Candidate, example_lines, feature_tokens  # noqa: E402
from bandit.learner import _BATCH, learn_once  # noqa: E402
from bandit.learner import BATCH_SIZE as _BATCH_SIZE  # noqa: E402
from bandit.models import Decision, PolicySnapshot, Reward, utcnow  # noqa: E402
from bandit.policy import Policy  # noqa: E402
from bandit.rewards import RewardConfig  # noqa: E402
from web.config import DEFAULT_VW_ARGS  # noqa: E402
from web.db import make_engine, make_sessionmaker, scratch_database, upgrade  # noqa: E402

SEGMENTS = ["teen-scifi", "family", "crime-buffs", "romance", "documentary"]
LOOKS = ["face", "landscape", "group", "typographic", "close-up"]
HUES = ["red", "blue", "green", "none"]


def simulated_log(count: int, seed: int) -> tuple[list[Decision], list[dict[str, Any]]]:
    """Decisions drawn by a fresh policy (as serving draws them) and their click events."""
    rng = random.Random(seed)
    titles = []
    for n in range(40):
        candidates = [
            Candidate(
                f"t{n}-v{k}",
                {
                    "tag": rng.sample(LOOKS, 2),
                    "brightness": round(rng.random(), 3),
                    "contrast": round(rng.random(), 3),
                    "saturation": round(rng.random(), 3),
                    "hue": rng.choice(HUES),
                },
            )
            for k in range(3)
        ]
        titles.append((f"title-{n}", {"title": f"title-{n}", "genre": ["drama"]}, candidates))
    likes = {s: rng.choice(LOOKS) for s in SEGMENTS}
    policy = Policy(DEFAULT_VW_ARGS)
    exploration = ExplorationConfig(floor=0.05, apprentice_examples=0)
    start = utcnow() - timedelta(days=2)
    decisions, events = [], []
    for i in range(count):
        slot, slot_features, candidates = rng.choice(titles)
        segment = rng.choice(SEGMENTS)
        context = {
            "segment": segment,
            "device": rng.choice(["tv", "web", "phone"]),
            "country": rng.choice(["US", "FR", "JP"]),
            "hour": rng.randrange(24),
        }
        request = DecisionRequest(slot, candidates, context, slot_features)
        (decision,) = choose(
            policy, [request], rng, exploration=exploration, now=start + timedelta(seconds=i)
        )
        decisions.append(decision)
        liked = likes[segment] in candidates[decision.chosen_index].features["tag"]
        if rng.random() < (0.4 if liked else 0.05):
            events.append(
                {
                    "event_id": decision.event_id,
                    "type": "click",
                    "value": 1.0,
                    "created_at": decision.created_at + timedelta(seconds=30),
                    "late": False,
                }
            )
    return decisions, events


def _namespace(features: dict[str, Any]) -> dict[str, Any]:
    """keyart's tokens as a DSJSON namespace object: `k=v` → {"k=v": 1}, `k:x` → {"k": x}."""
    out: dict[str, Any] = {}
    for token in feature_tokens(features):
        name, sep, weight = token.rpartition(":")
        if sep and "=" not in token:
            out[name] = float(weight)
        else:
            out[token] = 1
    return out


def write_dsjson(path: Path, decisions: list[Decision], rewards: dict[str, float]) -> None:
    """The decisions in VW's decision-service JSON, with the same features keyart learns."""
    with path.open("w") as out:
        for d in decisions:
            line = {
                "_label_cost": -rewards.get(d.event_id, 0.0),
                "_label_probability": d.probability,
                "_label_Action": d.chosen_index + 1,
                "_labelIndex": d.chosen_index,
                "EventId": d.event_id,
                "a": list(range(1, len(d.candidates) + 1)),
                "c": {
                    "user": _namespace(d.context),
                    "title": _namespace(d.slot_features),
                    "_multi": [
                        {"art": {f"id={c['id']}": 1, **_namespace(c["features"])}}
                        for c in d.candidates
                    ],
                },
                "p": d.distribution,
            }
            out.write(json.dumps(line) + "\n")


def bench(name: str, url: str, decisions: list[Decision], events: list[dict[str, Any]],
          args: argparse.Namespace, work: Path) -> None:  # fmt: skip
    engine = make_engine(url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        store_candidate_sets(session, decisions)  # type: ignore[arg-type]
        session.connection().execute(insert(Decision), [decision_row(d) for d in decisions])
        if events:
            session.connection().execute(insert(Reward), events)
        session.commit()
    if engine.dialect.name == "postgresql":
        # Planner statistics for the freshly loaded log, as autovacuum keeps them on a live
        # server: without any, PostgreSQL reads a batch by sorting the whole table on disk.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE decisions, rewards, candidate_sets"))
    rewards = RewardConfig(wait_seconds=600.0)
    with sessions() as session:
        # The rewards exactly as the learner joins them, for the DSJSON file.
        clicked = {event_id: 1.0 for (event_id,) in session.execute(select(Reward.event_id))}
        ordered = session.scalars(select(Decision).order_by(Decision.id)).all()
        path = work / f"{name}.dsjson"
        write_dsjson(path, list(ordered), clicked)
        argv = [*shlex.split(DEFAULT_VW_ARGS), "--dsjson", "-d", str(path)]

        # Rounds of: a full learning pass from an empty policy, then VW's driver both ways,
        # with its parser thread (the CLI's default) and without. Interleaved, so a slow
        # spell of this shared machine falls on both sides; each side's figure is its best.
        ours, rounds = float("inf"), []
        driver = {False: float("inf"), True: float("inf")}
        first_pass = None
        for _ in range(args.repeat):
            session.execute(delete(PolicySnapshot))
            session.commit()
            started = time.perf_counter()
            report = learn_once(session, DEFAULT_VW_ARGS, rewards, batch_size=args.batch)
            seconds = time.perf_counter() - started
            first_pass = seconds if first_pass is None else first_pass
            ours = min(ours, seconds)
            cli = float("inf")
            for onethread in driver:
                started = time.perf_counter()
                vw.run_cli_driver(argv, onethread=onethread)
                elapsed = time.perf_counter() - started
                driver[onethread] = min(driver[onethread], elapsed)
                cli = min(cli, elapsed)
            rounds.append(cli / seconds)
        theirs = min(driver.values())

        gc.disable()  # as the learner does for a pass
        started = time.perf_counter()
        rows = 0
        for first in range(0, len(decisions), args.batch):
            query = {"cursor": first, "size": args.batch, "horizon": utcnow()}
            rows += len(session.connection().execute(_BATCH, query).all())
        reading = time.perf_counter() - started
        gc.enable()
    engine.dispose()

    # The floor under any Python learner: the binding alone, on text already featurised.
    lines = [
        example_lines(
            d.context,
            d.slot_features,
            [Candidate(c["id"], c["features"]) for c in d.candidates],
            (d.chosen_index, -clicked.get(d.event_id, 0.0), d.probability),
        )
        for d in ordered
    ]
    binding = Policy(DEFAULT_VW_ARGS)
    started = time.perf_counter()
    for example in lines:
        binding.learn_lines(example)
    bound = time.perf_counter() - started

    ours_rate = report.learned / ours
    theirs_rate = len(ordered) / theirs
    bound_rate = len(lines) / bound
    print(f"\n{name}: {report.learned} decisions, batches of {args.batch}")
    print(f"  keyart learner from SQL:    {ours_rate:10.0f} decisions/s ({ours:.3f}s)")
    for onethread, seconds in driver.items():
        mode = "one thread" if onethread else "parser thread"
        print(
            f"  VW CLI driver on DSJSON, {mode + ':':14}"
            f"{len(ordered) / seconds:10.0f} decisions/s ({seconds:.3f}s)"
        )
    print(f"  ratio keyart / faster VW:   {ours_rate / theirs_rate:10.2f}   (target ≥ 0.5)")
    print(
        f"  (the same ratio round by round: median {statistics.median(rounds):.2f}, "
        f"lowest {min(rounds):.2f}, over {len(rounds)} rounds)"
    )
    print(f"  (the first pass, which also starts VW's worker process: {first_pass:.3f}s)")
    read_rate = rows / reading
    print(
        f"  (reading the rows from SQL alone: {read_rate:.0f} decisions/s, "
        f"{read_rate / theirs_rate:.2f} of the CLI: a floor under any learner from the log)"
    )
    print(
        f"  (VW's Python binding alone, pre-featurised text: {bound_rate:.0f} decisions/s, "
        f"{bound_rate / theirs_rate:.2f} of the CLI: the ceiling of a learner feeding VW one "
        "example at a time through the binding, as this one did before)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decisions", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=_BATCH_SIZE)
    parser.add_argument("--repeat", type=int, default=5, help="best of this many runs")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    print(f"simulating {args.decisions} decisions...", flush=True)
    decisions, events = simulated_log(args.decisions, seed=1)
    with tempfile.TemporaryDirectory(prefix="keyart-learner-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "sqlite"):
            bench("SQLite", f"sqlite:///{work / 'keyart.db'}", decisions, events, args, work)
        if args.only in (None, "postgres"):
            with scratch_database(args.postgres, "keyart_bench") as url:
                bench("PostgreSQL", url, decisions, events, args, work)


if __name__ == "__main__":
    main()

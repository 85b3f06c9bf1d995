"""The simulator: drive a synthetic world through keyart's real decision path (real
decisions logged to a real database, real reward events, the real learner on a schedule,
the serving policy hot-loading its snapshots) and, on the very same traffic, the baselines
keyart must beat. It answers "does it actually converge, and how fast?"."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from bandit.config import DEFAULT_EXPLORATION, DEFAULT_VW_ARGS, ExplorationConfig
from bandit.decision_log import GroupCommitLog
from bandit.decisions import (
    DecisionService,
    JSONDict,
    ListedCandidates,
    Slot,
    logged_candidates,
)
from bandit.features import Candidate, context_text
from bandit.leadership import LearnerSteps
from bandit.learner import learn_once
from bandit.optimizer import Optimization
from bandit.rewards import Event, RewardConfig, record_events
from bandit.snapshots import ServingPolicy
from bandit.world import SEED_LIMIT, World

BASELINES = ("uniform", "editor_default", "best_variant_in_hindsight", "thompson", "oracle")
START = datetime(2026, 1, 1)


@dataclass(frozen=True)
class SimulationConfig:
    """How long to run, how keyart's loop is scheduled in simulated time, and the settings
    it decides and learns with: by default exactly a server's defaults."""

    decisions: int = 100_000
    vw_args: str = DEFAULT_VW_ARGS
    exploration: ExplorationConfig = DEFAULT_EXPLORATION
    # Simulated seconds between decisions, the reward window, and the learner's period.
    seconds_per_decision: float = 1.0
    reward_wait: float = 60.0
    learn_every: int = 2000
    # Decisions whose clicks are sent back together (a UI's beacon batch).
    batch: int = 100
    tail: float = 0.2
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.decisions < 10:
            raise ValueError("decisions must be at least 10")
        if self.learn_every < 1 or self.batch < 1:
            raise ValueError("learn_every and batch must be positive")
        if not 0 < self.tail <= 1:
            raise ValueError("tail must be in (0, 1]")
        if self.reward_wait < 0 or self.seconds_per_decision <= 0:
            raise ValueError("reward_wait must be >= 0 and seconds_per_decision > 0")
        if self.seed is not None and not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {self.seed}")


@dataclass(frozen=True)
class Traffic:
    """The requests every policy faces, and the uniform number each click is decided by
    (common random numbers: a variant is clicked iff u < its true rate)."""

    segment: np.ndarray
    device: np.ndarray
    title: np.ndarray
    country: np.ndarray
    hour: np.ndarray
    click_u: np.ndarray


@dataclass
class PolicyRun:
    name: str
    expected: np.ndarray  # true click rate of each chosen variant
    clicks: np.ndarray
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    # For keyart: the true click rate of the variant its served distribution favoured (its
    # most probable), and of the distribution as a whole (sum of probability × rate), per
    # decision. They split its distance from the oracle into what it has not learned yet
    # (oracle − favourite) and what exploring costs (favourite − served).
    favourite: np.ndarray | None = None
    served: np.ndarray | None = None


@dataclass
class SimulationResult:
    runs: list[PolicyRun]
    oracle_rates: np.ndarray
    tail: float
    # The true click rate of every variant for each request: (decisions, max variants).
    request_rates: np.ndarray | None = None

    def summary(self) -> list[dict[str, Any]]:
        n = len(self.oracle_rates)
        start = n - max(1, round(n * self.tail))
        oracle_tail = float(np.mean(self.oracle_rates[start:]))
        rows = []
        for run in self.runs:
            expected_tail = float(np.mean(run.expected[start:]))
            split: dict[str, float] = {}
            if run.favourite is not None and run.served is not None and oracle_tail > 0:
                favourite = run.favourite[start:]
                split = {
                    "favourite_vs_oracle": float(np.mean(favourite)) / oracle_tail,
                    "served_vs_oracle": float(np.mean(run.served[start:])) / oracle_tail,
                    # Ties with the best variant count as the best.
                    "favourite_is_best": float(np.mean(favourite >= self.oracle_rates[start:])),
                }
            rows.append(
                {
                    "policy": run.name,
                    "ctr_tail": float(np.mean(run.clicks[start:])),
                    "expected_ctr_tail": expected_tail,
                    # Where even the oracle expects no click (a world whose rates underflow
                    # to 0), every policy expects none either: each matches the oracle.
                    "vs_oracle": expected_tail / oracle_tail if oracle_tail > 0 else 1.0,
                    "cumulative_regret": float(np.sum(self.oracle_rates - run.expected)),
                    "seconds": run.seconds,
                    **split,
                    **run.extra,
                }
            )
        return rows


def request_click_rates(world: World, traffic: Traffic) -> np.ndarray:
    """Each request's true click rate for every variant of its title, in the world's phase
    at that point of the run: (decisions, max variants), NaN past a title's variants."""
    n = len(traffic.title)
    bounds = np.asarray(world.phase_bounds())
    phases = np.searchsorted(bounds, np.arange(n) / n, side="right") - 1
    out = np.full((n, max(len(t.variants) for t in world.titles)), np.nan)
    for phase, start in enumerate(bounds):
        mask = phases == phase
        rates = world.click_rates_at(float(start))
        out[mask] = rates[traffic.segment[mask], traffic.device[mask], traffic.title[mask]]
    return out


def make_traffic(world: World, n: int, rng: np.random.Generator) -> Traffic:
    def pick(weights: Sequence[float]) -> np.ndarray:
        p = np.asarray(weights, dtype=float)
        return rng.choice(len(p), size=n, p=p / p.sum())

    return Traffic(
        segment=pick([s.weight for s in world.segments]),
        device=pick([d.weight for d in world.devices]),
        title=pick([t.weight for t in world.titles]),
        country=rng.integers(0, len(world.countries), size=n),
        hour=rng.integers(0, 24, size=n),
        click_u=rng.random(n),
    )


def _context(world: World, traffic: Traffic, i: int) -> dict[str, Any]:
    return {
        "segment": world.segments[traffic.segment[i]].name,
        "device": world.devices[traffic.device[i]].name,
        "country": world.countries[traffic.country[i]],
        "hour": int(traffic.hour[i]),
    }


def world_catalog(world: World) -> ListedCandidates:
    """The world's titles as the decision service reads them: each title's variants with
    their traits as features, its genres, and its editor default, so that apprentice mode
    runs here as it does for a new title in production."""
    slots = []
    for title in world.titles:
        candidates = [Candidate(v.id, dict(v.traits)) for v in title.variants]
        # What the policy knows of a title, as the serving catalog describes it.
        features = JSONDict({"title": title.id, "genre": list(title.genres)})
        slots.append(
            Slot(
                title.id,
                candidates,
                title.variants[title.default].id,
                features,
                context_text(features),
                logged_candidates(candidates),
            )
        )
    return ListedCandidates(slots)


def run_keyart(
    world: World,
    traffic: Traffic,
    rates: np.ndarray,  # each request's true rate per variant: (decisions, max variants)
    sessions: sessionmaker[Session],
    config: SimulationConfig,
    rng_seed: int,
    progress: Callable[[int], None] | None = None,
    steps: LearnerSteps | None = None,
) -> PolicyRun:
    """keyart's own loop, as a server runs it: the decision service (`DecisionService`,
    with the server's floor, apprentice threshold and group-commit log) → reward events
    through `record_events` → the learner's pass → the serving policy's refresh.

    `steps` are the learner's own around each pass (`web.cli.learner_steps`): its settings
    read each pass (stored settings win) and, with automatic optimisation, the optimiser
    after it, in simulated time; an adopted setting is stored, becomes a lineage on the next
    pass, is trained from the log and switched in there, as in production. Without them,
    every pass learns with `config.vw_args`. The runs of the optimiser and the switches of
    lineage are in the result's `extra`, each at the decision count it happened after."""
    import random

    started = time.perf_counter()
    n = len(traffic.title)
    rewards = RewardConfig(wait_seconds=config.reward_wait)
    steps = steps or LearnerSteps(lambda _session: (config.vw_args, rewards))
    known_types = tuple(rewards.values)
    optimizations: list[dict[str, Any]] = []
    switches: list[dict[str, Any]] = []
    serving = ServingPolicy(sessions, config.vw_args, poll_seconds=3600.0)
    log = GroupCommitLog(sessions.kw["bind"])
    service = DecisionService(
        world_catalog(world), serving, log, config.exploration, random.Random(rng_seed)
    )
    expected = np.zeros(n)
    clicks = np.zeros(n)
    favourite = np.zeros(n)
    served = np.zeros(n)
    next_learn = config.learn_every
    learned_versions = 0
    events: list[Event] = []
    flush_by = START
    try:
        with sessions() as session:
            for i in range(n):
                now = START + timedelta(seconds=i * config.seconds_per_decision)
                title = world.titles[traffic.title[i]].id
                (decision,) = service.decide(
                    [title], _context(world, traffic, i), now=now
                ).decisions
                rate = rates[i, decision.chosen_index]
                expected[i] = rate
                shown = decision.distribution
                favourite[i] = rates[i, max(range(len(shown)), key=shown.__getitem__)]
                served[i] = float(np.dot(shown, rates[i, : len(shown)]))
                if traffic.click_u[i] < rate:
                    clicks[i] = 1.0
                    if not events:
                        flush_by = now + timedelta(seconds=config.reward_wait / 2)
                    events.append(Event(decision.event_id, "click"))
                done = i + 1
                # Clicks come back in batches, as a UI's event beacons send them, each well
                # within its decision's reward window.
                if events and (done % config.batch == 0 or done == n or now >= flush_by):
                    record_events(
                        session,
                        events,
                        reward_wait=config.reward_wait,
                        known_types=known_types,
                        now=now,
                    )
                    session.commit()
                    events = []
                if done >= next_learn or done == n:
                    next_learn += config.learn_every
                    vw_args, pass_rewards = steps.settings(session)
                    report = learn_once(session, vw_args, pass_rewards, now=now)
                    session.commit()
                    if report.version is not None:
                        learned_versions += 1
                    if report.switched:
                        switches.append({"decisions": done, "vw_args": vw_args})
                    if steps.after_pass is not None:
                        run = steps.after_pass(session, now)
                        if isinstance(run, Optimization):
                            optimizations.append(_optimization_record(run, done))
                    serving.refresh()  # what the serving poller does on its next tick
                    if progress is not None:
                        progress(done)
    finally:
        log.stop(timeout=30)
    extra: dict[str, Any] = {"snapshots": learned_versions, "vw_args": config.vw_args}
    if steps.after_pass is not None:
        extra["optimizations"] = optimizations
    if switches:
        extra["switches"] = switches
    seconds = time.perf_counter() - started
    return PolicyRun("keyart", expected, clicks, seconds, extra, favourite, served)


def _optimization_record(run: Optimization, decisions: int) -> dict[str, Any]:
    """One optimiser run, as a simulation reports it."""
    adopted = run.adopt
    return {
        "decisions": decisions,
        "events": run.events,
        "candidates": len(run.rows),
        "adopted": None
        if adopted is None
        else {"exploration_args": adopted.exploration_args, "interactions": adopted.interactions},
        "verdict": run.verdict,
        # Each setting scored: its arguments, doubly robust estimate and 95% interval, and
        # its gain over the serving setting on the same events with that interval.
        "table": [
            {
                k: row[k]
                for k in (
                    "exploration_args",
                    "interactions",
                    "estimate",
                    "ci95",
                    "gain",
                    "gain_ci95",
                    "serving",
                )
            }
            for row in run.rows
        ],
    }


def run_baseline(
    name: str, world: World, traffic: Traffic, rates: np.ndarray, rng: np.random.Generator
) -> PolicyRun:
    """One of `BASELINES` on the same traffic, with the same click numbers."""
    started = time.perf_counter()
    n = len(traffic.title)
    sizes = np.array([len(t.variants) for t in world.titles])
    rows = rates  # each request's true rate per variant: (n, max variants)
    if name == "uniform":
        chosen = np.floor(rng.random(n) * sizes[traffic.title]).astype(int)
    elif name == "editor_default":
        chosen = np.array([t.default for t in world.titles])[traffic.title]
    elif name == "oracle":
        chosen = np.nanargmax(rows, axis=1)
    elif name == "best_variant_in_hindsight":
        # The single variant per title with the most expected clicks over the traffic it got.
        best = np.zeros(len(world.titles), dtype=int)
        for t in range(len(world.titles)):
            mask = traffic.title == t
            if mask.any():
                best[t] = int(np.nanargmax(np.nansum(rows[mask], axis=0)))
        chosen = best[traffic.title]
    elif name == "thompson":
        chosen = _thompson(world, traffic, rows, rng)
    else:
        raise ValueError(f"unknown baseline {name!r}")
    expected = rows[np.arange(n), chosen]
    clicks = (traffic.click_u < expected).astype(float)
    return PolicyRun(name, expected, clicks, time.perf_counter() - started)


def _thompson(
    world: World, traffic: Traffic, rates: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A Beta(1, 1)–Bernoulli Thompson sampler per (segment, title), updated after every
    decision: the tabular bandit a team might build without features."""
    most = rates.shape[1]
    wins = np.ones((len(world.segments), len(world.titles), most))
    losses = np.ones_like(wins)
    sizes = [len(t.variants) for t in world.titles]
    chosen = np.zeros(len(traffic.title), dtype=int)
    for i in range(len(traffic.title)):
        s, t = traffic.segment[i], traffic.title[i]
        k = sizes[t]
        v = int(np.argmax(rng.beta(wins[s, t, :k], losses[s, t, :k])))
        chosen[i] = v
        if traffic.click_u[i] < rates[i, v]:
            wins[s, t, v] += 1
        else:
            losses[s, t, v] += 1
    return chosen


def simulate(
    world: World,
    sessions: sessionmaker[Session],
    config: SimulationConfig,
    progress: Callable[[int], None] | None = None,
    steps: LearnerSteps | None = None,
) -> SimulationResult:
    """Run keyart (its learner taking `steps`, see `run_keyart`) and every baseline over the
    same simulated traffic."""
    seed = world.seed if config.seed is None else config.seed
    rng = np.random.default_rng(seed)
    traffic = make_traffic(world, config.decisions, rng)
    request_rates = request_click_rates(world, traffic)
    oracle_rates = np.nanmax(request_rates, axis=1)
    runs = [run_keyart(world, traffic, request_rates, sessions, config, seed, progress, steps)]
    for name in BASELINES:
        runs.append(
            run_baseline(name, world, traffic, request_rates, np.random.default_rng(seed + 1))
        )
    return SimulationResult(runs, oracle_rates, config.tail, request_rates)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    lines = [
        "| policy | CTR, last 20% (clicks) | expected CTR, last 20% | vs oracle "
        "| cumulative regret | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['policy']} | {row['ctr_tail']:.4f} | {row['expected_ctr_tail']:.4f} "
            f"| {row['vs_oracle']:.1%} "
            f"| {row['cumulative_regret']:.0f} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines)


def loss_split(row: Mapping[str, Any]) -> str | None:
    """A summary row's split of its distance from the oracle (`PolicyRun.favourite`) in
    words, or None for a policy without a served distribution."""
    if "favourite_vs_oracle" not in row:
        return None
    cost = row["favourite_vs_oracle"] - row["served_vs_oracle"]
    return (
        f"{row['policy']}: its favourite variant would earn {row['favourite_vs_oracle']:.1%} of"
        f" the oracle (the viewer's best in {row['favourite_is_best']:.1%} of decisions);"
        f" exploring costs {100 * cost:.1f} points"
    )


def plot_regret(result: SimulationResult, path: Path) -> None:
    """Cumulative regret of every policy against decisions, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    x = np.arange(1, len(result.oracle_rates) + 1)
    for run in result.runs:
        if run.name == "oracle":
            continue
        ax.plot(x, np.cumsum(result.oracle_rates - run.expected), label=run.name)
    ax.set_xlabel("decisions")
    ax.set_ylabel("cumulative regret (expected clicks lost)")
    ax.set_title("keyart vs baselines on the simulated world")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

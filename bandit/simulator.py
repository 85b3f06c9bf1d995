"""The simulator: drive a synthetic world through keyart's real decision path (real
decisions logged to a real database, real reward events, the real learner on a schedule,
the serving policy hot-loading its snapshots) and, on the very same traffic, the baselines
keyart must beat. It answers "does it actually converge, and how fast?"."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from bandit.features import Candidate
from bandit.learner import RewardConfig, learn_once
from bandit.log import DecisionRequest, Event, decide, record_events
from bandit.snapshots import ServingPolicy
from bandit.world import SEED_LIMIT, World

BASELINES = ("uniform", "editor_default", "best_variant_in_hindsight", "thompson", "oracle")
START = datetime(2026, 1, 1)


@dataclass(frozen=True)
class SimulationConfig:
    """How long to run and how keyart's loop is scheduled in simulated time."""

    decisions: int = 100_000
    vw_args: str = "--cb_explore_adf --squarecb -q ua -q ta --quiet"
    # Simulated seconds between decisions, the reward window, and the learner's period.
    seconds_per_decision: float = 1.0
    reward_wait: float = 60.0
    learn_every: int = 1000
    # Decisions per `decide` call and transaction (a page of requests).
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
                    **run.extra,
                }
            )
        return rows


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


def run_keyart(
    world: World,
    traffic: Traffic,
    rates: np.ndarray,
    sessions: Callable[[], Session],
    config: SimulationConfig,
    rng_seed: int,
    progress: Callable[[int], None] | None = None,
) -> PolicyRun:
    """keyart's own loop: `decide` → log → reward events → `learn_once` → snapshot hot-load."""
    import random

    started = time.perf_counter()
    n = len(traffic.title)
    rewards = RewardConfig(wait_seconds=config.reward_wait)
    known_types = tuple(rewards.values)
    serving = ServingPolicy(sessions, config.vw_args, poll_seconds=3600.0)
    rng = random.Random(rng_seed)
    candidates = [
        [Candidate(v.id, dict(v.traits)) for v in title.variants] for title in world.titles
    ]
    slot_features = [{"title": t.id, "genre": list(t.genres)} for t in world.titles]
    expected = np.zeros(n)
    clicks = np.zeros(n)
    next_learn = config.learn_every
    learned_versions = 0
    with sessions() as session:
        for start in range(0, n, config.batch):
            stop = min(n, start + config.batch)
            now = START + timedelta(seconds=start * config.seconds_per_decision)
            requests = [
                DecisionRequest(
                    slot=world.titles[traffic.title[i]].id,
                    candidates=candidates[traffic.title[i]],
                    context=_context(world, traffic, i),
                    slot_features=slot_features[traffic.title[i]],
                )
                for i in range(start, stop)
            ]
            decisions = decide(session, serving.current, requests, rng, now=now)
            session.commit()
            events = []
            for i, decision in zip(range(start, stop), decisions, strict=True):
                rate = rates[
                    traffic.segment[i], traffic.device[i], traffic.title[i], decision.chosen_index
                ]
                expected[i] = rate
                if traffic.click_u[i] < rate:
                    clicks[i] = 1.0
                    events.append(Event(decision.event_id, "click"))
            if events:
                record_events(
                    session,
                    events,
                    reward_wait=config.reward_wait,
                    known_types=known_types,
                    now=now,
                )
                session.commit()
            if stop >= next_learn or stop == n:
                next_learn += config.learn_every
                report = learn_once(session, config.vw_args, rewards, now=now)
                session.commit()
                if report.version is not None:
                    learned_versions += 1
                serving.refresh()
                if progress is not None:
                    progress(stop)
    return PolicyRun(
        "keyart",
        expected,
        clicks,
        time.perf_counter() - started,
        {"snapshots": learned_versions, "vw_args": config.vw_args},
    )


def run_baseline(
    name: str, world: World, traffic: Traffic, rates: np.ndarray, rng: np.random.Generator
) -> PolicyRun:
    """One of `BASELINES` on the same traffic, with the same click numbers."""
    started = time.perf_counter()
    n = len(traffic.title)
    sizes = np.array([len(t.variants) for t in world.titles])
    rows = rates[traffic.segment, traffic.device, traffic.title]  # (n, max variants)
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
        chosen = _thompson(world, traffic, rates, rng)
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
    most = rates.shape[3]
    wins = np.ones((len(world.segments), len(world.titles), most))
    losses = np.ones_like(wins)
    sizes = [len(t.variants) for t in world.titles]
    chosen = np.zeros(len(traffic.title), dtype=int)
    for i in range(len(traffic.title)):
        s, t = traffic.segment[i], traffic.title[i]
        k = sizes[t]
        v = int(np.argmax(rng.beta(wins[s, t, :k], losses[s, t, :k])))
        chosen[i] = v
        if traffic.click_u[i] < rates[s, traffic.device[i], t, v]:
            wins[s, t, v] += 1
        else:
            losses[s, t, v] += 1
    return chosen


def simulate(
    world: World,
    sessions: Callable[[], Session],
    config: SimulationConfig,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Run keyart and every baseline over the same simulated traffic."""
    seed = world.seed if config.seed is None else config.seed
    rng = np.random.default_rng(seed)
    traffic = make_traffic(world, config.decisions, rng)
    rates = world.click_rates()
    oracle_rates = np.nanmax(rates[traffic.segment, traffic.device, traffic.title], axis=1)
    runs = [run_keyart(world, traffic, rates, sessions, config, seed, progress)]
    for name in BASELINES:
        runs.append(run_baseline(name, world, traffic, rates, np.random.default_rng(seed + 1)))
    request_rates = rates[traffic.segment, traffic.device, traffic.title]
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

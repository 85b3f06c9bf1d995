"""Ceilings for learning quality: what a learner with none of keyart's loop finds in a
simulated world from the same traffic, so that what `benchmarks/quality.py` reports for
keyart can be read against them. Not ways to serve.

- **VW online**: plain VW learning from every decision as it is made (no floor, no apprentice
  phase, no batches, no log), with keyart's features (`bandit.features`).
- **informed Thompson**: a learner told the click model's form, so it only has to learn its
  numbers. Its features are exactly the world's (each title's base rate, each variant's
  appeal, each segment's and device's liking of each trait), its model is the world's own
  (logistic), it is refit by Bayesian logistic regression every `--learn-every` decisions, as
  keyart's learner runs, and it chooses by Thompson sampling from the posterior. Where even
  it falls short of a target, no learner that sees only what keyart sees is likely to meet it.

    python benchmarks/vw_ceiling.py [--decisions 40000] [--learn-every 2000] [--seeds 3]
        [--args "--cb_explore_adf ..."]... [--no-informed] [--world NAME_OR_PATH]...

Same traffic and click draws as the simulator (`bandit.simulator.make_traffic`, the world's
seed and the `--seeds` − 1 after it, as `benchmarks/quality.py --seeds` draws them), share of
the oracle's expected click rate over the last 20%, the mean over the seeds.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import numpy as np
import vowpal_wabbit_next as vw
from scipy.special import expit

from bandit.config import DEFAULT_VW_ARGS
from bandit.features import CONTEXT_NS, SLOT_NS, Candidate, context_text
from bandit.simulator import _context, make_traffic, request_click_rates
from bandit.world import Trait, World, load_world

WORLDS = ("default", "segments", "devices", "one_best", "noise_features", "drift")


def _tail_share(expected: np.ndarray, rates: np.ndarray) -> float:
    tail = slice(len(expected) - len(expected) // 5, len(expected))
    return float(expected[tail].mean() / np.nanmax(rates, axis=1)[tail].mean())


def ceiling(world: World, decisions: int, vw_args: str, learn_every: int = 1) -> float:
    """Plain VW on keyart's features, learning from every decision as it is made, or (with
    `learn_every` > 1) from each batch of that many once it is complete, as keyart's learner
    passes do."""
    rng = np.random.default_rng(world.seed)
    traffic = make_traffic(world, decisions, rng)
    rates = request_click_rates(world, traffic)
    workspace = vw.Workspace([*vw_args.split(), "--quiet"])
    parser = vw.TextFormatParser(workspace)
    candidates = [[Candidate(v.id, dict(v.traits)) for v in t.variants] for t in world.titles]
    titles = [context_text({"title": t.id, "genre": list(t.genres)}) for t in world.titles]
    draw = random.Random(world.seed)
    expected = np.zeros(decisions)
    pending: list[list[str]] = []
    for i in range(decisions):
        t = traffic.title[i]
        shared = f"shared |{CONTEXT_NS} {context_text(_context(world, traffic, i))}"
        shared += f" |{SLOT_NS} {titles[t]}"
        lines = [c.line for c in candidates[t]]
        example = [parser.parse_line(shared), *(parser.parse_line(line) for line in lines)]
        distribution = dict(workspace.predict_one(example))
        chosen = draw.choices(list(distribution), weights=list(distribution.values()))[0]
        expected[i] = rates[i, chosen]
        cost = -1.0 if traffic.click_u[i] < rates[i, chosen] else 0.0
        lines[chosen] = f"0:{cost}:{distribution[chosen]} {lines[chosen]}"
        pending.append([shared, *lines])
        if len(pending) == learn_every:
            for labelled in pending:
                workspace.learn_one([parser.parse_line(line) for line in labelled])
            pending.clear()
    return _tail_share(expected, rates)


def _trait_values(traits: Mapping[str, Trait]) -> dict[str, float]:
    """A variant's traits as the click model reads them (`bandit.world._liking`): `name=value`
    for a categorical trait, `name` with its number for a numeric or boolean one."""
    return {
        f"{name}={value.lower()}" if isinstance(value, str) else name: (
            1.0 if isinstance(value, str) else float(value)
        )
        for name, value in traits.items()
    }


def click_model_features(world: World) -> tuple[np.ndarray, list[str]]:
    """x(s, d, t, v), the features the world's click logit is linear in: one per title (its
    base rate), one per variant (its appeal), and one per segment × trait and device × trait
    (their likings). Shape (segments, devices, titles, most variants, features); the names.
    Like the world's own reading, a string trait is categorical and a number or boolean is a
    weight; a `name=value` liking of a number or boolean (which `_liking` would match on its
    text) has no feature here, and no shipped world has one (tests/test_ceilings.py)."""
    values = [[_trait_values(v.traits) for v in t.variants] for t in world.titles]
    traits = sorted({k for title in values for variant in title for k in variant})
    names = [f"title:{t.id}" for t in world.titles]
    names += [f"appeal:{t.id}/{v.id}" for t in world.titles for v in t.variants]
    first_liking = len(names)
    names += [f"segment {s.name}:{k}" for s in world.segments for k in traits]
    names += [f"device {d.name}:{k}" for d in world.devices for k in traits]
    n_s, n_d, n_t = len(world.segments), len(world.devices), len(world.titles)
    x = np.zeros((n_s, n_d, n_t, max(len(t.variants) for t in world.titles), len(names)))
    appeal = n_t
    for t, title in enumerate(values):
        for v, traits_of_v in enumerate(title):
            cell = x[:, :, t, v]
            cell[..., t] = 1.0
            cell[..., appeal + v] = 1.0
            for key, value in traits_of_v.items():
                k = traits.index(key)
                for s in range(n_s):
                    cell[s, :, first_liking + s * len(traits) + k] = value
                for d in range(n_d):
                    cell[:, d, first_liking + (n_s + d) * len(traits) + k] = value
        appeal += len(title)
    return x, names


def _posterior(
    x: np.ndarray, shown: np.ndarray, clicks: np.ndarray, precision: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bayesian logistic regression on counts (`shown`, `clicks` per row of `x`) with the prior
    N(0, diag(1 / precision)): the posterior's mode by Newton's method, from `theta`, and its
    covariance (the Laplace approximation)."""
    for _ in range(100):
        p = expit(x @ theta)
        hessian = (x * (shown * p * (1 - p))[:, None]).T @ x + np.diag(precision)
        step = np.linalg.solve(hessian, x.T @ (clicks - shown * p) - precision * theta)
        theta = theta + step
        if np.max(np.abs(step)) < 1e-8:
            break
    p = expit(x @ theta)
    hessian = (x * (shown * p * (1 - p))[:, None]).T @ x + np.diag(precision)
    return theta, np.linalg.inv(hessian)


def informed_ceiling(
    world: World, decisions: int, learn_every: int, thompson: bool = True
) -> float:
    """Thompson sampling (or, `thompson=False`, the posterior's best guess) from a Bayesian
    logistic regression on `click_model_features`, refit every `learn_every` decisions on
    every click and non-click so far."""
    traffic = make_traffic(world, decisions, np.random.default_rng(world.seed))
    rates = request_click_rates(world, traffic)
    draw = np.random.default_rng(world.seed + 1)
    x, _ = click_model_features(world)
    cells = x.shape[:4]
    rows = x.reshape(-1, x.shape[-1])
    shown, clicks = np.zeros(len(rows)), np.zeros(len(rows))
    sizes = [len(t.variants) for t in world.titles]
    # Likings and appeals: N(0, 1), wide for logit changes of a few tenths. A title's base:
    # N(0, 10²), since a click rate of a few percent is a log-odds of about −3.
    precision = np.ones(x.shape[-1])
    precision[: len(world.titles)] = 0.01
    theta = np.zeros(x.shape[-1])
    expected = np.zeros(decisions)
    for start in range(0, decisions, learn_every):
        theta, covariance = _posterior(rows, shown, clicks, precision, theta)
        means = x @ theta
        # A draw needs only the k scores of the request's variants: their mean and a Cholesky
        # factor of their k × k covariance, per (segment, device, title), not a whole θ.
        factors: dict[tuple[int, int, int], np.ndarray] = {}
        for i in range(start, min(start + learn_every, decisions)):
            cell = (int(traffic.segment[i]), int(traffic.device[i]), int(traffic.title[i]))
            k = sizes[cell[2]]
            score = means[cell][:k]
            if thompson:
                if cell not in factors:
                    block = x[cell][:k]
                    cov = block @ covariance @ block.T
                    factors[cell] = np.linalg.cholesky(cov + 1e-12 * np.eye(k))
                score = score + factors[cell] @ draw.standard_normal(k)
            v = int(np.argmax(score))
            expected[i] = rates[i, v]
            row = np.ravel_multi_index((*cell, v), cells)
            shown[row] += 1
            clicks[row] += traffic.click_u[i] < rates[i, v]
    return _tail_share(expected, rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=40_000)
    parser.add_argument("--learn-every", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per world (their mean)")
    parser.add_argument("--args", action="append", help="VW arguments (repeatable)")
    parser.add_argument(
        "--no-informed", action="store_true", help="leave out the two informed learners"
    )
    parser.add_argument("--world", action="append", help=f"one of {', '.join(WORLDS)} or a file")
    options = parser.parse_args()
    if options.seeds < 1 or options.decisions < 5 or options.learn_every < 1:
        parser.error("--seeds and --learn-every must be at least 1, --decisions at least 5")
    root = Path(__file__).resolve().parent.parent / "bandit" / "worlds"
    arg_sets = options.args or [
        DEFAULT_VW_ARGS.replace("--quiet ", ""),
        DEFAULT_VW_ARGS.replace("--squarecb", "--squarecb --coin").replace("--quiet ", ""),
    ]
    n, every = options.decisions, options.learn_every
    learners: list[tuple[str, Callable[[World], float]]] = []
    for args in arg_sets:
        learners.append(
            (f"VW online `{args}`", partial(ceiling, decisions=n, vw_args=args, learn_every=1))
        )
    learners.append(
        (
            f"VW in batches of {every} `{arg_sets[0]}`",
            partial(ceiling, decisions=n, vw_args=arg_sets[0], learn_every=every),
        )
    )
    if not options.no_informed:
        learners.append(
            ("informed Thompson", partial(informed_ceiling, decisions=n, learn_every=every))
        )
        learners.append(
            (
                "informed greedy",
                partial(informed_ceiling, decisions=n, learn_every=every, thompson=False),
            )
        )
    print("| world | learner | share of the oracle, last 20% | lowest–highest seed |")
    print("|---|---|---:|---:|")
    for name in options.world or WORLDS:
        path = None if name == "default" else root / f"{name}.json" if name in WORLDS else name
        world = load_world(path)
        for label, learner in learners:
            seeded = (
                world.model_copy(update={"seed": world.seed + k}) for k in range(options.seeds)
            )
            shares = [learner(w) for w in seeded]
            print(
                f"| {name} | {label} | {np.mean(shares):.1%} "
                f"| {min(shares):.1%}–{max(shares):.1%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

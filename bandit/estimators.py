"""Off-policy estimators: how much reward would a target policy have earned on a log that a
different (logging) policy collected? Each estimator is one formula over per-event arrays, in
the manner of the Open Bandit Pipeline's `ope` module.

Notation, for logged events i = 1..n:
    r_i        the observed reward
    p_i        the logged probability of the chosen action a_i
    π_i(a)     the target policy's probability of action a for event i's context
    w_i        = π_i(a_i) / p_i, the importance weight (optionally clipped at `clip`)
    q̂_i(a)     a reward model's estimate of E[r | x_i, a]

Confidence intervals are 95%: by default the normal approximation
mean ± 1.96·s/√n over the per-event terms (SNIPS uses the delta method), or a percentile
bootstrap over events with an injected seeded generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Z95 = 1.959963984540054
Interval = Literal["normal", "bootstrap"]


@dataclass(frozen=True)
class OffPolicyData:
    """A logged bandit dataset seen through one target policy.

    `target` and `reward_model` hold one array per event (events may have different numbers
    of candidates); `chosen` indexes into them.
    """

    rewards: np.ndarray
    propensities: np.ndarray
    chosen: np.ndarray
    target: Sequence[np.ndarray]
    reward_model: Sequence[np.ndarray] | None = None

    def __post_init__(self) -> None:
        n = len(self.rewards)
        if not (len(self.propensities) == len(self.chosen) == len(self.target) == n):
            raise ValueError(
                "rewards, propensities, chosen and target must have one entry per event"
            )
        if n and (np.any(self.propensities <= 0) or np.any(self.propensities > 1)):
            raise ValueError("logged propensities must lie in (0, 1]")
        if self.reward_model is not None and len(self.reward_model) != n:
            raise ValueError("reward_model must have one entry per event")

    @classmethod
    def build(
        cls,
        rewards: Sequence[float],
        propensities: Sequence[float],
        chosen: Sequence[int],
        target: Sequence[Sequence[float]],
        reward_model: Sequence[Sequence[float]] | None = None,
    ) -> OffPolicyData:
        return cls(
            np.asarray(rewards, dtype=float),
            np.asarray(propensities, dtype=float),
            np.asarray(chosen, dtype=int),
            [np.asarray(t, dtype=float) for t in target],
            None if reward_model is None else [np.asarray(q, dtype=float) for q in reward_model],
        )

    def weights(self, clip: float | None = None) -> np.ndarray:
        """w_i = π_i(a_i) / p_i, clipped at `clip` when given."""
        pi_chosen = np.array([t[a] for t, a in zip(self.target, self.chosen, strict=True)])
        w = pi_chosen / self.propensities if len(pi_chosen) else np.zeros(0)
        return np.minimum(w, clip) if clip is not None else w


@dataclass(frozen=True)
class Estimate:
    """A policy value with its 95% interval and the effective sample size of the weights."""

    estimator: str
    value: float
    lower: float
    upper: float
    n: int
    effective_sample_size: float

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "estimator": self.estimator,
            "value": self.value,
            "ci95": [self.lower, self.upper],
            "n": self.n,
            "effective_sample_size": self.effective_sample_size,
        }


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish's ESS = (Σ w_i)² / Σ w_i²: how many on-policy events the log is worth to this
    target. Far below n means a few large weights dominate and the estimate is fragile."""
    total_sq = float(np.sum(weights**2))
    return float(np.sum(weights)) ** 2 / total_sq if total_sq > 0 else 0.0


def _mean_interval(
    name: str,
    terms: np.ndarray,
    weights: np.ndarray,
    interval: Interval,
    rng: np.random.Generator | None,
    resamples: int,
) -> Estimate:
    n = len(terms)
    ess = effective_sample_size(weights)
    if n == 0:
        return Estimate(name, float("nan"), float("nan"), float("nan"), 0, 0.0)
    value = float(np.mean(terms))
    if interval == "bootstrap":
        means = _bootstrap(rng, n, resamples, lambda idx: terms[idx].mean(axis=1))
        lower, upper = np.quantile(means, [0.025, 0.975])
        return Estimate(name, value, float(lower), float(upper), n, ess)
    half = Z95 * float(np.std(terms, ddof=1)) / np.sqrt(n) if n > 1 else float("inf")
    return Estimate(name, value, value - half, value + half, n, ess)


def _bootstrap(
    rng: np.random.Generator | None,
    n: int,
    resamples: int,
    statistic: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """`statistic` of `resamples` resamples of the n events (rows of an index matrix)."""
    if rng is None:
        raise ValueError("a bootstrap interval needs a seeded numpy Generator (rng=...)")
    # Resample in chunks so memory stays bounded on long logs.
    out = []
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        out.append(statistic(idx))
    return np.concatenate(out)


def ips(
    data: OffPolicyData,
    *,
    clip: float | None = None,
    interval: Interval = "normal",
    rng: np.random.Generator | None = None,
    resamples: int = 1000,
) -> Estimate:
    """Inverse propensity scoring: V̂ = (1/n) Σ w_i r_i. Unbiased when every action the
    target may choose had p > 0 in the log (and `clip` is None).

    >>> d = OffPolicyData.build([1, 0], [0.5, 0.5], [0, 1], [[1, 0], [1, 0]])
    >>> ips(d).value
    1.0
    """
    w = data.weights(clip)
    return _mean_interval("ips", w * data.rewards, w, interval, rng, resamples)


def snips(
    data: OffPolicyData,
    *,
    clip: float | None = None,
    interval: Interval = "normal",
    rng: np.random.Generator | None = None,
    resamples: int = 1000,
) -> Estimate:
    """Self-normalised IPS: V̂ = Σ w_i r_i / Σ w_i. Slightly biased, much lower variance
    than IPS when weights are large. The normal interval uses the delta method:
    Var ≈ Σ w_i² (r_i − V̂)² / (Σ w_i)²."""
    w = data.weights(clip)
    r = data.rewards
    n = len(r)
    ess = effective_sample_size(w)
    total = float(np.sum(w))
    if n == 0 or total <= 0:
        return Estimate("snips", float("nan"), float("nan"), float("nan"), n, ess)
    value = float(np.sum(w * r)) / total
    if interval == "bootstrap":
        values = _bootstrap(
            rng,
            n,
            resamples,
            lambda idx: (w[idx] * r[idx]).sum(axis=1) / np.maximum(w[idx].sum(axis=1), 1e-300),
        )
        lower, upper = np.quantile(values, [0.025, 0.975])
        return Estimate("snips", value, float(lower), float(upper), n, ess)
    half = Z95 * float(np.sqrt(np.sum(w**2 * (r - value) ** 2))) / total
    return Estimate("snips", value, value - half, value + half, n, ess)


def _model_terms(data: OffPolicyData) -> tuple[np.ndarray, np.ndarray]:
    if data.reward_model is None:
        raise ValueError("the direct method and doubly robust need a reward model")
    expected = np.array(
        [float(np.dot(t, q)) for t, q in zip(data.target, data.reward_model, strict=True)]
    )
    at_chosen = np.array([q[a] for q, a in zip(data.reward_model, data.chosen, strict=True)])
    return expected, at_chosen


def dm(
    data: OffPolicyData,
    *,
    interval: Interval = "normal",
    rng: np.random.Generator | None = None,
    resamples: int = 1000,
) -> Estimate:
    """Direct method: V̂ = (1/n) Σ_i Σ_a π_i(a) q̂_i(a). No importance weights, so low
    variance, but biased exactly as much as the reward model is wrong. (Its interval covers
    only the sampling noise of the contexts, not the model's error.)"""
    expected, _ = _model_terms(data)
    w = data.weights()
    return _mean_interval("dm", expected, w, interval, rng, resamples)


def dr(
    data: OffPolicyData,
    *,
    clip: float | None = None,
    interval: Interval = "normal",
    rng: np.random.Generator | None = None,
    resamples: int = 1000,
) -> Estimate:
    """Doubly robust: V̂ = (1/n) Σ_i [Σ_a π_i(a) q̂_i(a) + w_i (r_i − q̂_i(a_i))].
    Unbiased if either the propensities or the reward model are right; the model soaks up
    variance the weights would otherwise add."""
    w = data.weights(clip)
    return _mean_interval("dr", dr_terms(data, clip=clip), w, interval, rng, resamples)


def dr_terms(data: OffPolicyData, *, clip: float | None = None) -> np.ndarray:
    """The doubly robust estimate's per-event terms, Σ_a π_i(a) q̂_i(a) + w_i (r_i − q̂_i(a_i)):
    two policies' terms on the same events can be compared event by event (a paired test)."""
    expected, at_chosen = _model_terms(data)
    return expected + data.weights(clip) * (data.rewards - at_chosen)


def paired_difference(terms: np.ndarray, baseline: np.ndarray) -> tuple[float, tuple[float, float]]:
    """The mean of `terms − baseline` over the same events and its normal 95% interval.
    Far narrower than either estimate's own interval: the events' shared noise cancels."""
    if len(terms) != len(baseline) or len(terms) < 2:
        raise ValueError("a paired difference needs the same events, at least two")
    diff = np.asarray(terms) - np.asarray(baseline)
    mean = float(diff.mean())
    half = Z95 * float(diff.std(ddof=1)) / np.sqrt(len(diff))
    return mean, (mean - half, mean + half)


def on_policy(
    rewards: Sequence[float] | np.ndarray,
    *,
    interval: Interval = "normal",
    rng: np.random.Generator | None = None,
    resamples: int = 1000,
) -> Estimate:
    """The logging policy's own value: the plain mean reward, V̂ = (1/n) Σ r_i."""
    r = np.asarray(rewards, dtype=float)
    return _mean_interval("on_policy", r, np.ones(len(r)), interval, rng, resamples)

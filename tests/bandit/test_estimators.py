"""Estimators against hand-computed values, a closed form, and interval coverage."""

from __future__ import annotations

import numpy as np
import pytest

from bandit import estimators
from bandit.estimators import OffPolicyData

# Four events, two actions; the target gives action 0 a share of 0.8 everywhere.
# w = π(a)/p = [0.8/0.5, 0.2/0.5, 0.2/0.25, 0.8/0.75] = [1.6, 0.4, 0.8, 16/15]
TINY = OffPolicyData.build(
    rewards=[1, 0, 1, 0],
    propensities=[0.5, 0.5, 0.25, 0.75],
    chosen=[0, 1, 1, 0],
    target=[[0.8, 0.2]] * 4,
    reward_model=[[0.5, 0.3]] * 4,
)


def test_ips_by_hand() -> None:
    estimate = estimators.ips(TINY)
    assert estimate.value == pytest.approx(2.4 / 4)
    # Terms [1.6, 0, 0.8, 0]: sample variance 1.76/3; half width 1.96·sd/√4.
    half = 1.959963984540054 * np.sqrt(1.76 / 3) / 2
    assert (estimate.lower, estimate.upper) == pytest.approx((0.6 - half, 0.6 + half))
    assert estimate.n == 4


def test_snips_by_hand() -> None:
    total_weight = 1.6 + 0.4 + 0.8 + 16 / 15
    assert estimators.snips(TINY).value == pytest.approx(2.4 / total_weight)


def test_effective_sample_size_by_hand() -> None:
    total = 1.6 + 0.4 + 0.8 + 16 / 15
    squares = 1.6**2 + 0.4**2 + 0.8**2 + (16 / 15) ** 2
    assert estimators.ips(TINY).effective_sample_size == pytest.approx(total**2 / squares)
    # Equal weights: the log is worth every one of its events.
    same = OffPolicyData.build([1, 0, 1], [0.5] * 3, [0, 0, 1], [[0.5, 0.5]] * 3)
    assert estimators.ips(same).effective_sample_size == pytest.approx(3)


def test_clipping_caps_weights() -> None:
    # Clipped at 1: w = [1, 0.4, 0.8, 1] → (1·1 + 0.8·1) / 4.
    assert estimators.ips(TINY, clip=1.0).value == pytest.approx(1.8 / 4)
    assert estimators.ips(TINY, clip=1.0).value < estimators.ips(TINY).value


def test_direct_method_and_doubly_robust_by_hand() -> None:
    # Σ_a π(a) q̂(a) = 0.8·0.5 + 0.2·0.3 = 0.46 for every event.
    assert estimators.dm(TINY).value == pytest.approx(0.46)
    # 0.46 + w_i (r_i − q̂(a_i)): 1.26, 0.34, 1.02, 0.46 − 8/15.
    expected = (1.26 + 0.34 + 1.02 + 0.46 - 8 / 15) / 4
    assert estimators.dr(TINY).value == pytest.approx(expected)


def test_dm_needs_a_reward_model() -> None:
    data = OffPolicyData.build([1], [0.5], [0], [[1, 0]])
    with pytest.raises(ValueError, match="reward model"):
        estimators.dm(data)


def test_bad_propensities_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        OffPolicyData.build([1], [0.0], [0], [[1, 0]])


def test_snips_of_a_deterministic_target_under_uniform_logging_is_the_matched_mean() -> None:
    """Closed form: with uniform logging and a deterministic target, every matching event
    has the same weight, so SNIPS is the plain mean reward of the events where the logged
    action is the target's, and IPS is K times the matched reward sum over n."""
    rng = np.random.default_rng(7)
    n, k = 500, 4
    chosen = rng.integers(0, k, n)
    rewards = rng.random(n)
    target_action = rng.integers(0, k, n)
    data = OffPolicyData.build(rewards, [1 / k] * n, chosen, [np.eye(k)[a] for a in target_action])
    matched = [r for r, a, t in zip(rewards, chosen, target_action, strict=True) if a == t]
    assert estimators.snips(data).value == pytest.approx(sum(matched) / len(matched))
    assert estimators.ips(data).value == pytest.approx(k * sum(matched) / n)
    assert estimators.ips(data).effective_sample_size == pytest.approx(len(matched))


def test_on_the_logging_policy_itself_ips_is_the_mean_reward() -> None:
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(3), size=50)
    chosen = [int(rng.choice(3, p=row)) for row in p]
    rewards = rng.random(50)
    data = OffPolicyData.build(
        rewards, [row[a] for row, a in zip(p, chosen, strict=True)], chosen, p
    )
    assert estimators.ips(data).value == pytest.approx(float(np.mean(rewards)))
    assert estimators.on_policy(rewards).value == pytest.approx(float(np.mean(rewards)))


def test_bootstrap_is_reproducible_from_its_seed_and_needs_one() -> None:
    first = estimators.ips(TINY, interval="bootstrap", rng=np.random.default_rng(1))
    second = estimators.ips(TINY, interval="bootstrap", rng=np.random.default_rng(1))
    assert (first.lower, first.upper) == (second.lower, second.upper)
    assert first.lower <= first.value <= first.upper
    with pytest.raises(ValueError, match="seeded"):
        estimators.ips(TINY, interval="bootstrap")


# A known world: two contexts, three actions, Bernoulli rewards.
MEANS = np.array([[0.2, 0.5, 0.1], [0.6, 0.3, 0.4]])
LOGGING = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
TARGET = np.array([[0.1, 0.8, 0.1], [0.7, 0.1, 0.2]])
TRUE_VALUE = float(0.5 * np.sum(TARGET * MEANS))  # contexts equally likely


def _simulated_log(seed: int, n: int = 1000) -> OffPolicyData:
    rng = np.random.default_rng(seed)
    contexts = rng.integers(0, 2, n)
    u = rng.random(n)
    chosen = (u[:, None] > np.cumsum(LOGGING[contexts], axis=1)).sum(axis=1)
    rewards = (rng.random(n) < MEANS[contexts, chosen]).astype(float)
    return OffPolicyData.build(
        rewards,
        LOGGING[contexts, chosen],
        chosen,
        list(TARGET[contexts]),
        # A deliberately wrong reward model: DR must stay right regardless.
        [np.full(3, 0.3)] * n,
    )


@pytest.mark.parametrize("estimator", [estimators.ips, estimators.snips, estimators.dr])
def test_intervals_cover_the_true_value_of_a_known_policy(estimator) -> None:  # type: ignore[no-untyped-def]
    covered = 0
    for seed in range(100):
        estimate = estimator(_simulated_log(seed))
        covered += estimate.lower <= TRUE_VALUE <= estimate.upper
    assert covered >= 90, covered


def test_bootstrap_intervals_cover_too() -> None:
    covered = 0
    for seed in range(100):
        estimate = estimators.ips(
            _simulated_log(seed, 400),
            interval="bootstrap",
            rng=np.random.default_rng(seed),
            resamples=300,
        )
        covered += estimate.lower <= TRUE_VALUE <= estimate.upper
    assert covered >= 90, covered


def test_a_paired_difference_sees_a_gain_that_overlapping_intervals_hide() -> None:
    # Two policies scored on the same 20,000 events: most of each one's noise is the
    # events' own (which viewers clicked), the same for both.
    rng = np.random.default_rng(7)
    shared = rng.binomial(1, 0.08, 20_000) / 0.5
    baseline = shared + rng.normal(0, 0.01, shared.size)
    better = shared * 1.03 + rng.normal(0, 0.01, shared.size)
    half = estimators.Z95 * baseline.std(ddof=1) / np.sqrt(baseline.size)
    # Apart, the better one's lower bound is nowhere near above the other's estimate...
    assert better.mean() - half < baseline.mean()
    gain, (low, high) = estimators.paired_difference(better, baseline)
    # ...paired, its gain is clearly above zero, and it is the difference of the means.
    assert gain == pytest.approx(better.mean() - baseline.mean())
    assert 0 < low < gain < high
    with pytest.raises(ValueError, match="same events"):
        estimators.paired_difference(better, baseline[:-1])

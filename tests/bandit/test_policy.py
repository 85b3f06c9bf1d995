"""The policy reuses parsed VW examples across predictions: they must score exactly as
freshly parsed ones do, whatever was predicted with them before. And serving lays an
example out with the slot's features on each action line, learning with them on the
shared line: the two must score alike."""

from __future__ import annotations

import random

from bandit.features import (
    Candidate,
    context_text,
    example_lines,
    serving_action_line,
    serving_shared_line,
)
from bandit.policy import Policy, normalise
from web.config import DEFAULT_VW_ARGS


def _scored(policy: Policy, lines: list[str], count: int) -> list[float]:
    scored = policy.workspace.predict_one([policy._parser.parse_line(line) for line in lines])
    probabilities = [0.0] * count
    for index, probability in scored:
        probabilities[index] = float(probability)
    return normalise(probabilities)


def _fresh(policy: Policy, context: dict, slot: dict, candidates: list[Candidate]) -> list[float]:
    """Serving's layout, parsed afresh."""
    lines = [
        serving_shared_line(context_text(context)),
        *[serving_action_line(c, context_text(slot)) for c in candidates],
    ]
    return _scored(policy, lines, len(candidates))


def _trained(rng: random.Random) -> tuple[Policy, list[Candidate]]:
    looks = ["face", "group", "landscape", "dark", "bright"]
    variants = [
        Candidate(f"v{k}", {"tag": rng.sample(looks, 2), "brightness": round(rng.random(), 3)})
        for k in range(8)
    ]
    policy = Policy(DEFAULT_VW_ARGS)
    for _ in range(2000):
        context = {"segment": rng.choice("abc"), "hour": rng.randrange(24)}
        slot = {"title": rng.choice(["t", "u"]), "genre": ["drama"]}
        chosen = rng.sample(variants, 3)
        index = rng.randrange(3)
        liked = looks.index(chosen[index].features["tag"][0]) == ord(context["segment"]) % 5
        cost = -1.0 if liked == (slot["title"] == "t") else 0.0
        policy.learn(context, slot, chosen, index, cost, 1 / 3)
    return policy, variants


def test_reused_examples_predict_as_fresh_ones() -> None:
    rng = random.Random(3)
    policy, variants = _trained(rng)
    differing = 0
    for _ in range(3000):
        context = {"segment": rng.choice("abc"), "hour": rng.randrange(24)}
        slot = {"title": rng.choice(["t", "u"]), "genre": ["drama"]}
        chosen = rng.sample(variants, rng.randrange(2, 5))
        cached = policy.distribution(context, slot, chosen)
        assert cached == _fresh(policy, context, slot, chosen)
        differing += cached != [1 / len(chosen)] * len(chosen)
    # The model has learned something, so the comparison is not between uniforms.
    assert differing > 1000


def test_serving_layout_scores_as_the_learning_layout() -> None:
    """The model learned `example_lines` (slot on the shared line); serving puts the slot on
    each action line. VW gives each action the shared line's namespaces, so the features
    are the same: the distributions agree to float rounding, and a model that learned
    the slot's part (each title here likes the opposite looks) shows it in both."""
    rng = random.Random(5)
    policy, variants = _trained(rng)
    worst, by_title = 0.0, 0
    for _ in range(500):
        context = {"segment": rng.choice("abc"), "hour": rng.randrange(24)}
        chosen = rng.sample(variants, rng.randrange(2, 5))
        served = {
            title: policy.distribution(context, {"title": title, "genre": ["drama"]}, chosen)
            for title in ("t", "u")
        }
        for title, distribution in served.items():
            slot = {"title": title, "genre": ["drama"]}
            learned = _scored(policy, example_lines(context, slot, chosen), len(chosen))
            worst = max(worst, *(abs(a - b) for a, b in zip(distribution, learned, strict=True)))
        top = {title: max(range(len(chosen)), key=d.__getitem__) for title, d in served.items()}
        by_title += top["t"] != top["u"]
    assert worst < 1e-4
    assert by_title > 100

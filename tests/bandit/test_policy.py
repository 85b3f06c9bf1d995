"""The policy reuses parsed VW examples across predictions: they must score exactly as
freshly parsed ones do, whatever was predicted with them before."""

from __future__ import annotations

import random

from bandit.features import Candidate, example_lines
from bandit.policy import Policy, normalise
from web.config import DEFAULT_VW_ARGS


def _fresh(policy: Policy, context: dict, slot: dict, candidates: list[Candidate]) -> list[float]:
    lines = example_lines(context, slot, candidates)
    scored = policy.workspace.predict_one([policy._parser.parse_line(line) for line in lines])
    probabilities = [0.0] * len(candidates)
    for index, probability in scored:
        probabilities[index] = float(probability)
    return normalise(probabilities)


def test_reused_examples_predict_as_fresh_ones() -> None:
    rng = random.Random(3)
    looks = ["face", "group", "landscape", "dark", "bright"]
    variants = [
        Candidate(f"v{k}", {"tag": rng.sample(looks, 2), "brightness": round(rng.random(), 3)})
        for k in range(8)
    ]
    policy = Policy(DEFAULT_VW_ARGS)
    for _ in range(2000):
        context = {"segment": rng.choice("abc"), "hour": rng.randrange(24)}
        chosen = rng.sample(variants, 3)
        index = rng.randrange(3)
        cost = (
            -1.0
            if looks.index(chosen[index].features["tag"][0]) == ord(context["segment"]) % 5
            else 0.0
        )
        policy.learn(context, {"title": "t"}, chosen, index, cost, 1 / 3)
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

"""The informed ceiling of `benchmarks/vw_ceiling.py` is only a ceiling if its model is the
worlds' own click model: these check that its features reproduce every shipped world's click
rates exactly, with the world's own numbers as weights, and that it learns them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logit

from bandit.world import World, load_world, parse_world
from benchmarks.vw_ceiling import click_model_features, informed_ceiling

WORLDS = Path(str(resources.files("bandit") / "worlds"))
SHIPPED = ("default", "segments", "devices", "one_best", "noise_features", "drift")


def _true_weights(world: World, names: list[str]) -> np.ndarray:
    """The world's own numbers, placed on the features they multiply."""
    weights = dict.fromkeys(names, 0.0)
    for title in world.titles:
        weights[f"title:{title.id}"] = float(logit(title.base_rate))
        for variant in title.variants:
            weights[f"appeal:{title.id}/{variant.id}"] = variant.appeal
    for kind, audiences in (("segment", world.segments), ("device", world.devices)):
        for audience in audiences:
            for key, change in audience.prefers.items():
                name, sep, wanted = key.partition("=")
                feature = (
                    f"{kind} {audience.name}:{name}={wanted.lower()}"
                    if sep
                    else (f"{kind} {audience.name}:{name}")
                )
                # A liking of a trait no variant has moves no logit: it has no feature.
                if feature in weights:
                    weights[feature] += change
    return np.array([weights[n] for n in names])


@pytest.mark.parametrize("name", SHIPPED)
def test_the_informed_learner_s_features_are_the_click_model_s_own(name: str) -> None:
    world = load_world(None if name == "default" else WORLDS / f"{name}.json")
    x, names = click_model_features(world)
    rates = world.click_rates()  # the start of the run: `_true_weights` reads no phases
    present = ~np.isnan(rates)
    assert present.sum() > 0
    np.testing.assert_allclose((x @ _true_weights(world, names))[present], logit(rates[present]))


def _two_tastes() -> World:
    """Two segments who want opposite variants: 30% against 10% clicks."""
    return parse_world(
        {
            "seed": 7,
            "segments": [
                {"name": "likes-dark", "weight": 1, "prefers": {"palette=dark": 1.35}},
                {"name": "likes-bright", "weight": 1, "prefers": {"palette=bright": 1.35}},
            ],
            "devices": [{"name": "tv", "weight": 1}],
            "titles": [
                {
                    "id": "t",
                    "base_rate": 0.1,
                    "variants": [
                        {"id": "dark", "traits": {"palette": "dark"}},
                        {"id": "bright", "traits": {"palette": "bright"}},
                    ],
                }
            ],
        }
    )


def test_the_informed_learner_finds_each_segment_s_variant() -> None:
    # Any one variant for everyone gets (0.3 + 0.1) / 2 of the oracle's 0.3, two thirds.
    assert informed_ceiling(_two_tastes(), decisions=4000, learn_every=200) > 0.97

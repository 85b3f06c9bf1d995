"""The worlds keyart's defaults are chosen on: each ships, loads, and has the shape it is
named for; and the `phases` extension that lets a world change partway through a run."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from bandit.world import World, WorldError, load_world, parse_world

WORLDS = resources.files("bandit").joinpath("worlds")
SHIPPED = {"default", "segments", "devices", "one_best", "noise_features", "drift"}
# Personalisation must be worth something, but no more than real thumbnails give.
MIN_HEADROOM = 1.08
MAX_HEADROOM = 1.25


def _path(name: str) -> Path:
    return Path(str(WORLDS.joinpath(f"{name}.json")))


def _traffic(world: World) -> np.ndarray:
    """The share of decisions each (segment, device, title) gets, as the simulator draws."""
    shares = [
        np.array([a.weight for a in audiences], dtype=float)
        for audiences in (world.segments, world.devices, world.titles)
    ]
    s, d, t = (w / w.sum() for w in shares)
    return s[:, None, None] * d[None, :, None] * t[None, None, :]


def _figures(world: World, rates: np.ndarray) -> dict[str, float]:
    """Mean click rate of the oracle, of each title's best single variant, of the editor's
    default, and of oracles that know only the segment or only the device."""
    share = _traffic(world)
    known = np.nan_to_num(rates, nan=-1.0)  # a missing variant is never the best
    per_variant = (share[..., None] * known).sum(axis=(0, 1))  # (titles, variants)
    return {
        "oracle": float((share * known.max(axis=3)).sum()),
        "best_single": float(per_variant.max(axis=1).sum()),
        "default": float(sum(per_variant[t, x.default] for t, x in enumerate(world.titles))),
        "segment_only": float((share[..., None] * known).sum(axis=1).max(axis=2).sum()),
        "device_only": float((share[..., None] * known).sum(axis=0).max(axis=2).sum()),
    }


def _headroom(figures: dict[str, float]) -> float:
    return figures["oracle"] / figures["best_single"]


def test_every_shipped_world_loads() -> None:
    names = {Path(p.name).stem for p in WORLDS.iterdir() if p.name.endswith(".json")}
    assert names >= SHIPPED
    for name in sorted(names):
        world = load_world(_path(name))
        for bound in world.phase_bounds():
            rates = world.click_rates_at(bound)
            assert rates.shape[:3] == (len(world.segments), len(world.devices), len(world.titles))


@pytest.mark.parametrize("name", sorted(SHIPPED - {"default"}))
def test_benchmark_worlds_have_realistic_rates(name: str) -> None:
    world = load_world(_path(name))
    assert len(world.titles) >= 10
    assert all(len(t.variants) == 4 for t in world.titles)
    for bound in world.phase_bounds():
        rates = world.click_rates_at(bound)
        # A few percent, as real thumbnails get; none near certain or impossible.
        assert np.nanmin(rates) > 0.005 and np.nanmax(rates) < 0.3
        assert 0.03 < _figures(world, rates)["oracle"] < 0.15
        # The editor's default is not each title's best: there is something to learn.
        figures = _figures(world, rates)
        assert figures["default"] < 0.98 * figures["best_single"]


@pytest.mark.parametrize("name", ["segments", "devices", "noise_features", "drift"])
def test_personalisation_matters_in_the_personalised_worlds(name: str) -> None:
    world = load_world(_path(name))
    for bound in world.phase_bounds():
        headroom = _headroom(_figures(world, world.click_rates_at(bound)))
        assert MIN_HEADROOM <= headroom <= MAX_HEADROOM, (bound, headroom)


def test_the_segments_world_is_many_segments_that_decide_the_best_variant() -> None:
    world = load_world(_path("segments"))
    assert len(world.segments) >= 24
    figures = _figures(world, world.click_rates())
    gain = figures["oracle"] - figures["best_single"]
    # Knowing the segment earns nearly all of the oracle's gain; the device, little of it.
    assert figures["segment_only"] - figures["best_single"] >= 0.9 * gain
    assert figures["device_only"] - figures["best_single"] <= 0.3 * gain


def test_the_devices_world_is_dominated_by_the_device() -> None:
    world = load_world(_path("devices"))
    assert len(world.segments) <= 4 < len(world.devices)
    figures = _figures(world, world.click_rates())
    gain = figures["oracle"] - figures["best_single"]
    assert figures["device_only"] - figures["best_single"] >= 0.9 * gain
    assert figures["segment_only"] - figures["best_single"] <= 0.3 * gain


def test_in_the_one_best_world_one_variant_is_best_for_everyone() -> None:
    world = load_world(_path("one_best"))
    rates = world.click_rates()
    best = np.nanargmax(rates, axis=3)  # (segments, devices, titles)
    for t in range(len(world.titles)):
        assert len(np.unique(best[:, :, t])) == 1
        # ...and clearly: at least 15% more clicks than the runner-up in every cell.
        ordered = np.sort(rates[:, :, t, :], axis=2)
        assert np.all(ordered[:, :, -1] > 1.15 * ordered[:, :, -2])
    figures = _figures(world, rates)
    assert figures["oracle"] == pytest.approx(figures["best_single"])


def _noise_world() -> tuple[dict, set[str]]:
    """noise_features.json as written, and the names of its traits that are not the tag."""
    data = json.loads(_path("noise_features").read_text(encoding="utf-8"))
    traits = {name for t in data["titles"] for v in t["variants"] for name in v["traits"]}
    return data, traits - {"tag"}


def test_no_audience_prefers_a_noise_feature() -> None:
    data, noise = _noise_world()
    numeric = {
        name
        for t in data["titles"]
        for v in t["variants"]
        for name, value in v["traits"].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    # Image-feature-like numbers are there for keyart to see...
    assert len(numeric) >= 5 and numeric <= noise
    # ...and nobody cares about any of them (nor about anything but the tag).
    audiences = data["segments"] + data["devices"]
    preferences = [a.get("prefers", {}) for a in audiences]
    for phase in data.get("phases", []):
        preferences += [*phase.get("segments", {}).values(), *phase.get("devices", {}).values()]
    liked = {key.partition("=")[0] for prefers in preferences for key in prefers}
    assert liked == {"tag"}
    assert all(v.get("appeal", 0) == 0 for t in data["titles"] for v in t["variants"])


def test_the_noise_features_change_no_click_rate() -> None:
    data, noise = _noise_world()
    rng = np.random.default_rng(0)
    shuffled = json.loads(json.dumps(data))
    for title in shuffled["titles"]:
        for variant in title["variants"]:
            for name in noise & set(variant["traits"]):
                value = variant["traits"][name]
                variant["traits"][name] = (
                    f"other-{value}" if isinstance(value, str) else round(rng.random(), 2)
                )
    assert np.array_equal(parse_world(data).click_rates(), parse_world(shuffled).click_rates())
    # The tag does carry the signal.
    for title in shuffled["titles"]:
        for variant in title["variants"]:
            variant["traits"]["tag"] = "none"
    assert not np.array_equal(parse_world(data).click_rates(), parse_world(shuffled).click_rates())


def test_in_the_drift_world_the_best_variant_changes_halfway() -> None:
    world = load_world(_path("drift"))
    assert world.phase_bounds() == (0.0, 0.5)
    before, after = world.click_rates_at(0.0), world.click_rates_at(0.5)
    share = _traffic(world)[..., None]
    best_before = np.nanargmax(np.nansum(share * before, axis=(0, 1)), axis=1)
    best_after = np.nanargmax(np.nansum(share * after, axis=(0, 1)), axis=1)
    # Most titles' best single variant changes...
    assert np.mean(best_before != best_after) >= 0.7
    # ...and so does the best variant for many kinds of viewer.
    assert np.mean(np.nanargmax(before, axis=3) != np.nanargmax(after, axis=3)) >= 0.4
    # Keeping the first half's favourites costs clicks in the second half.
    kept = sum(np.nansum(share[:, :, t, 0] * after[:, :, t, v]) for t, v in enumerate(best_before))
    assert kept < 0.95 * _figures(world, after)["best_single"]


# Two segments that want opposite images, on two devices, for two titles; halfway they swap.
SWAP = {
    "seed": 1,
    "segments": [
        {"name": "dark-fans", "weight": 1, "prefers": {"palette=dark": 1.0}},
        {"name": "bright-fans", "weight": 1, "prefers": {"palette=bright": 1.0}},
    ],
    "devices": [{"name": "tv", "weight": 1}, {"name": "mobile", "weight": 1}],
    "titles": [
        {
            "id": f"title-{i}",
            "base_rate": 0.05,
            "variants": [
                {"id": f"t{i}-dark", "traits": {"palette": "dark"}},
                {"id": f"t{i}-bright", "traits": {"palette": "bright"}},
            ],
        }
        for i in range(2)
    ],
    "phases": [
        {
            "starts_at": 0.5,
            "segments": {
                "dark-fans": {"palette=bright": 1.0},
                "bright-fans": {"palette=dark": 1.0},
            },
        },
        {"starts_at": 0.75, "appeal": {"title-1": {"t1-dark": 3.0}}},
    ],
}


def test_click_rates_at_switches_at_each_phase_boundary() -> None:
    world = parse_world(SWAP)
    assert world.phase_bounds() == (0.0, 0.5, 0.75)
    assert [world.phase_at(f) for f in (0.0, 0.4999, 0.5, 0.7, 0.75, 1.0)] == [0, 0, 1, 1, 2, 2]
    start, swapped, late = (world.click_rates_at(f) for f in (0.0, 0.5, 1.0))
    assert np.array_equal(world.click_rates(), start)
    assert np.array_equal(world.click_rates_at(0.4999), start)
    # Before halfway dark-fans (segment 0) click the dark variant most, after it the bright.
    assert np.argmax(start[0, 0, 0]) == 0 and np.argmax(swapped[0, 0, 0]) == 1
    assert np.argmax(start[1, 0, 0]) == 1 and np.argmax(swapped[1, 0, 0]) == 0
    # The third phase changes one appeal and keeps the second phase's tastes.
    assert np.array_equal(late[:, :, 0], swapped[:, :, 0])
    assert np.all(late[:, :, 1, 0] > 0.3) and np.array_equal(late[:, :, 1, 1], swapped[:, :, 1, 1])


def test_phase_rates_are_shared_read_only_and_click_rates_is_a_copy() -> None:
    world = parse_world(SWAP)
    assert world.click_rates_at(0.6) is world.click_rates_at(0.7)
    with pytest.raises(ValueError, match="read-only"):
        world.click_rates_at(0.6)[0, 0, 0, 0] = 1.0
    mine = world.click_rates()
    mine[0, 0, 0, 0] = 1.0
    assert world.click_rates()[0, 0, 0, 0] != 1.0
    for fraction in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="fraction must lie within"):
            world.click_rates_at(fraction)


def test_a_world_without_phases_is_the_same_all_run() -> None:
    world = parse_world({k: v for k, v in SWAP.items() if k != "phases"})
    assert world.phase_bounds() == (0.0,)
    assert np.array_equal(world.click_rates_at(0.99), world.click_rates())


def _phases(*phases: dict) -> dict:
    return {**SWAP, "phases": list(phases)}


@pytest.mark.parametrize(
    ("world", "message"),
    [
        (_phases({"starts_at": 0}), "phases.0.starts_at: Input should be greater than 0"),
        (_phases({"starts_at": 1.0}), "phases.0.starts_at: Input should be less than 1"),
        (_phases({"starts_at": float("nan")}), "phases.0.starts_at: Input should be"),
        (_phases({}), "phases.0.starts_at: Field required"),
        (
            _phases({"starts_at": 0.6}, {"starts_at": 0.3}),
            "phases.1.starts_at: 0.3 must be after the phase before",
        ),
        (
            _phases({"starts_at": 0.5}, {"starts_at": 0.5}),
            "phases.1.starts_at: 0.5 must be after the phase before",
        ),
        (
            _phases({"starts_at": 0.5, "segments": {"nobody": {}}}),
            "phases.0.segments.nobody: no such segment",
        ),
        (
            _phases({"starts_at": 0.5, "devices": {"fridge": {"text": 1}}}),
            "phases.0.devices.fridge: no such device",
        ),
        (
            _phases({"starts_at": 0.5, "appeal": {"title-9": {"t9-dark": 1}}}),
            "phases.0.appeal.title-9: no such title",
        ),
        (
            # A variant of another title is not a variant of this one.
            _phases({"starts_at": 0.5, "appeal": {"title-0": {"t1-dark": 1}}}),
            "phases.0.appeal.title-0.t1-dark: no such variant in title-0",
        ),
        (
            _phases({"starts_at": 0.5, "appeal": {"title-0": {"t0-dark": 101}}}),
            "phases.0.appeal.title-0.t0-dark: Input should be less than or equal to 100",
        ),
        (
            _phases({"starts_at": 0.5, "segments": {"dark-fans": {"palette=dark": "x"}}}),
            "phases.0.segments.dark-fans.palette=dark: Input should be a valid number",
        ),
        (_phases({"starts_at": 0.5, "weather": "rain"}), "phases.0.weather: Extra inputs"),
        ({**SWAP, "phases": {"starts_at": 0.5}}, "phases: Input should be a valid list"),
    ],
)
def test_phase_errors_name_the_field(world: dict, message: str) -> None:
    with pytest.raises(WorldError, match=message.replace(".", r"\.")):
        parse_world(world)


def test_phases_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "drift.toml"
    path.write_text(
        'countries = ["US"]\n'
        '[[segments]]\nname = "a"\nweight = 1\n[segments.prefers]\n"palette=dark" = 1.0\n'
        '[[devices]]\nname = "tv"\nweight = 1\n'
        '[[titles]]\nid = "t"\nbase_rate = 0.05\n'
        '[[titles.variants]]\nid = "dark"\ntraits = {palette = "dark"}\n'
        '[[titles.variants]]\nid = "bright"\ntraits = {palette = "bright"}\n'
        '[[phases]]\nstarts_at = 0.25\n[phases.segments.a]\n"palette=bright" = 1.0\n'
    )
    world = load_world(path)
    assert world.phase_bounds() == (0.0, 0.25)
    assert np.argmax(world.click_rates()[0, 0, 0]) == 0
    assert np.argmax(world.click_rates_at(0.25)[0, 0, 0]) == 1

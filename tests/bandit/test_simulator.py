"""The simulator drives keyart's real loop against a real database and learns the world."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import func, select

from bandit.config import ExplorationConfig, FeatureConfig, compose_vw_args
from bandit.evaluation import EvaluationConfig, evaluate_events, latest_evaluation, logged_events
from bandit.lineages import stored_settings
from bandit.models import Decision, PolicyLineage, PolicySnapshot, Reward
from bandit.optimizer import LearningCandidate, default_grid
from bandit.rewards import RewardConfig
from bandit.simulator import (
    BASELINES,
    PolicyRun,
    SimulationConfig,
    SimulationResult,
    plot_regret,
    simulate,
)
from bandit.world import World, WorldError, load_world, parse_world
from tests.helpers import runtime
from web.cli import learner_steps

# Two segments that want opposite images, on two devices, for three titles.
TINY_WORLD = {
    "seed": 3,
    "segments": [
        {"name": "dark-fans", "weight": 1, "prefers": {"palette=dark": 2.0}},
        {"name": "bright-fans", "weight": 1, "prefers": {"palette=bright": 2.0}},
    ],
    "devices": [{"name": "tv", "weight": 1}, {"name": "mobile", "weight": 1}],
    "titles": [
        {
            "id": f"title-{i}",
            "base_rate": 0.1,
            "variants": [
                {"id": f"t{i}-dark", "traits": {"palette": "dark"}},
                {"id": f"t{i}-bright", "traits": {"palette": "bright"}},
                {"id": f"t{i}-grey", "traits": {"palette": "grey"}},
            ],
        }
        for i in range(3)
    ],
}


def _title(**variant: object) -> dict:
    """TINY_WORLD's first title with `variant`'s fields set on its first variant."""
    title = TINY_WORLD["titles"][0]
    return {**title, "variants": [{**title["variants"][0], **variant}, *title["variants"][1:]]}


def test_the_default_world_ships_and_has_the_promised_structure() -> None:
    world = load_world()
    rates = world.click_rates()
    best = np.nanargmax(rates, axis=3)  # (segments, devices, titles)
    # Segments disagree on some titles' best variant...
    assert any(len(np.unique(best[:, 0, t])) > 1 for t in range(len(world.titles)))
    # ...and some titles' best variant is the same for everyone.
    assert any(len(np.unique(best[:, :, t])) == 1 for t in range(len(world.titles)))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"segments": []}, "segments"),
        ({"titles": [{**TINY_WORLD["titles"][0], "base_rate": 1.5}]}, "titles.0.base_rate"),
        ({"titles": [{**TINY_WORLD["titles"][0], "default": 9}]}, "default: 9"),
        ({"devices": [{"name": "tv", "weight": -1}]}, "devices.0.weight"),
        ({"colour": "red"}, "colour"),
        # Numbers that used to overflow, reach numpy as NaN, or end up in the output.
        ({"titles": [_title(appeal=-1e308)]}, "titles.0.variants.0.appeal: Input should be"),
        ({"titles": [_title(appeal=math.nan)]}, "titles.0.variants.0.appeal: Input should be"),
        ({"titles": [_title(traits={"x": 1e308})]}, "titles.0.variants.0.traits.x"),
        (
            {"segments": [{"name": "a", "weight": 1, "prefers": {"x": math.nan}}]},
            "segments.0.prefers.x",
        ),
        ({"segments": [{"name": "a", "weight": math.inf}]}, "segments.0.weight"),
        (
            {"devices": [{"name": "tv", "weight": 1e308}, {"name": "mobile", "weight": 1e308}]},
            "devices: weights must add up to a finite number",
        ),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"seed": 2**63}, "seed: Input should be less than"),
    ],
)
def test_world_errors_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(WorldError, match=field.replace(".", r"\.")):
        parse_world({**TINY_WORLD, **change})


def test_world_files_load_from_json_and_toml(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    path.write_text(json.dumps(TINY_WORLD))
    assert load_world(path).titles[0].id == "title-0"
    toml = tmp_path / "world.toml"
    toml.write_text('seed = 1\ncountries = ["US"]\n[[segments]]\nname = "a"\nweight = 1\n')
    with pytest.raises(WorldError, match="devices: Field required"):
        load_world(toml)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(WorldError, match="not valid json"):
        load_world(tmp_path / "broken.json")
    (tmp_path / "latin1.json").write_bytes(b'{"seed": "\xe9"}')
    with pytest.raises(WorldError, match=r"latin1\.json is not UTF-8 text"):
        load_world(tmp_path / "latin1.json")


@pytest.mark.parametrize(("name", "prefix"), [("deep.json", ""), ("deep.toml", "a = ")])
def test_a_world_file_nested_too_deeply_is_a_world_error(
    tmp_path: Path, name: str, prefix: str
) -> None:
    path = tmp_path / name
    path.write_text(f"{prefix}{'[' * 100_000}{']' * 100_000}\n")
    with pytest.raises(WorldError, match=f"{name} is not valid {name[-4:]}: nested too deeply"):
        load_world(path)


def test_extreme_valid_worlds_have_click_rates_in_0_1() -> None:
    # The smallest base rate and appeal a world allows, and the largest liking.
    title = {**_title(appeal=-100.0), "base_rate": 1e-320}
    rare = parse_world({**TINY_WORLD, "titles": [title]})
    likes = {"name": "fans", "weight": 1, "prefers": {"x": 100.0}}
    hates = {"name": "haters", "weight": 1, "prefers": {"x": -100.0}}
    strong = parse_world(
        {**TINY_WORLD, "segments": [likes, hates], "titles": [_title(traits={"x": 1e6})]}
    )
    for world in (rare, strong):
        rates = world.click_rates()[:, :, 0, :]
        assert np.all((rates >= 0) & (rates <= 1))
    assert rare.click_rates()[0, 0, 0, 0] == 0.0


def test_a_world_where_no_click_is_possible_summarises_without_dividing_by_zero() -> None:
    never = np.zeros(50)
    result = SimulationResult([PolicyRun("uniform", never, never)], never, tail=0.2)
    assert result.summary()[0]["vs_oracle"] == 1.0


@pytest.mark.parametrize("seed", [-1, 2**63])
def test_a_traffic_seed_out_of_range_is_refused(seed: int) -> None:
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
        SimulationConfig(seed=seed)


def test_simulation_runs_the_real_loop_and_learns(app: Flask, tmp_path: Path) -> None:
    sessions = runtime(app).sessions
    world = World.model_validate(TINY_WORLD)
    config = SimulationConfig(
        decisions=3000,
        vw_args="--cb_explore_adf --epsilon 0.05 -q ua -q ta --quiet",
        # No apprentice phase: its 1% propensities would make the IPS intervals below too
        # wide to say anything (apprentice mode is simulated by default, as on a server).
        exploration=ExplorationConfig(apprentice_examples=0),
        learn_every=300,
    )
    result = simulate(world, sessions, config)
    rows = {row["policy"]: row for row in result.summary()}
    assert set(rows) == {"keyart", *BASELINES}
    keyart = result.runs[0]
    with sessions() as session:
        # Every decision was logged with the probability its draw used...
        assert session.scalar(select(func.count()).select_from(Decision)) == 3000
        for decision in session.scalars(select(Decision).limit(200)):
            assert decision.probability == decision.distribution[decision.chosen_index]
        # ...every simulated click came back as a reward event, and the learner saved policies.
        assert session.scalar(select(func.count()).select_from(Reward)) == keyart.clicks.sum()
        assert session.scalar(select(func.count()).select_from(PolicySnapshot)) >= 9
    assert rows["oracle"]["vs_oracle"] == pytest.approx(1.0)
    assert rows["oracle"]["cumulative_regret"] == pytest.approx(0.0)
    # The segments want opposite images: keyart must learn that, the per-title best can't.
    assert (
        rows["keyart"]["expected_ctr_tail"] > rows["best_variant_in_hindsight"]["expected_ctr_tail"]
    )
    assert rows["keyart"]["expected_ctr_tail"] > rows["uniform"]["expected_ctr_tail"]
    assert rows["keyart"]["vs_oracle"] > 0.85
    # Offline evaluation of that real log: the intervals for uniform random and the
    # editor's default cover their true values, known here from the world.
    with sessions() as session:
        events = list(
            logged_events(session, RewardConfig(wait_seconds=0), now=datetime(2100, 1, 1))
        )
    assert len(events) == 3000
    evaluated = evaluate_events(events, EvaluationConfig(candidates=[config.vw_args]))
    by_kind = {p["kind"]: p for p in evaluated["policies"]}
    truth = {
        "uniform": float(np.mean(np.nanmean(result.request_rates, axis=1))),
        "editor_default": float(np.mean(result.request_rates[:, 0])),
    }
    for kind, value in truth.items():
        for estimator in ("ips", "snips", "dr"):
            low, high = by_kind[kind]["estimates"][estimator]["ci95"]
            assert low <= value <= high, (kind, estimator, low, value, high)
    png = tmp_path / "regret.png"
    plot_regret(result, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_loss_split_reads_the_served_distribution(app: Flask) -> None:
    """In apprentice mode throughout, keyart serves each title's default with 1 − 2 × floor
    and the two other variants with the floor: its favourite is the default in every
    decision, and the served distribution's rate is known from the world's rates."""
    floor = 0.05
    config = SimulationConfig(
        decisions=600,
        exploration=ExplorationConfig(floor=floor, apprentice_examples=10**9),
        learn_every=300,
    )
    result = simulate(World.model_validate(TINY_WORLD), runtime(app).sessions, config)
    rows = {row["policy"]: row for row in result.summary()}
    tail = slice(600 - 120, 600)
    rates, oracle = result.request_rates[tail], result.oracle_rates[tail]
    assert rows["keyart"]["favourite_vs_oracle"] == pytest.approx(
        rows["editor_default"]["vs_oracle"], abs=1e-12
    )
    served = (1 - 2 * floor) * rates[:, 0] + floor * (rates[:, 1] + rates[:, 2])
    assert rows["keyart"]["served_vs_oracle"] == pytest.approx(served.mean() / oracle.mean())
    assert rows["keyart"]["favourite_is_best"] == pytest.approx(np.mean(rates[:, 0] >= oracle))
    # The split is keyart's alone: the baselines have no served distribution.
    assert "favourite_vs_oracle" not in rows["uniform"]


def test_the_simulated_learner_optimises_as_keyart_learn_does_and_adopts(app: Flask) -> None:
    """KEYART_AUTO_OPTIMIZE in the simulator: the learner's own steps (`learner_steps`) run
    the real optimiser after a pass once enough has been learned, and an adopted setting
    becomes a lineage that is trained from the log and switched in by the learner."""
    nearly_uniform = compose_vw_args("--cb_explore_adf --epsilon 0.9", FeatureConfig())
    config = SimulationConfig(
        decisions=3000,
        vw_args=nearly_uniform,
        exploration=ExplorationConfig(apprentice_examples=0),
        learn_every=300,
    )
    settings = replace(
        runtime(app).settings,
        vw_args=nearly_uniform,
        reward_wait=config.reward_wait,
        auto_optimize=True,
        optimize_min_events=1000,
    )
    sessions = runtime(app).sessions
    result = simulate(
        World.model_validate(TINY_WORLD), sessions, config, steps=learner_steps(settings)
    )
    keyart = result.runs[0]

    # It ran once: when the serving lineage had first learned 1,000 decisions (the pass at
    # 1,200: decisions of the last minute are still in their reward window), and not again
    # within the day-long interval. The whole grid was scored, and a setting adopted.
    (run,) = keyart.extra["optimizations"]
    assert run["decisions"] == 1200 and run["candidates"] == len(default_grid()) + 1
    adopted = run["adopted"]
    assert adopted is not None and run["verdict"].startswith("adopt")
    adopted_args = LearningCandidate(adopted["exploration_args"], adopted["interactions"]).vw_args(
        18
    )
    # The next pass trained a lineage for it from the log and switched it in, once.
    assert keyart.extra["switches"] == [{"decisions": 1500, "vw_args": adopted_args}]
    with sessions() as session:
        assert stored_settings(session) == {
            "KEYART_VW_ARGS": adopted["exploration_args"],
            "KEYART_INTERACTIONS": adopted["interactions"],
        }
        evaluation = latest_evaluation(session, None)
        assert evaluation.result["kind"] == "optimization"
        assert evaluation.result["adopted"] == adopted
        lineages = session.scalars(select(PolicyLineage).order_by(PolicyLineage.id)).all()
        assert [(x.status, x.settings["vw_args"]) for x in lineages] == [
            ("retired", nearly_uniform),
            ("serving", adopted_args),
        ]
        # Serving followed: every decision after the switch came from the new lineage.
        served = session.execute(
            select(PolicySnapshot.lineage_id)
            .join(Decision, Decision.policy_version == PolicySnapshot.version)
            .where(Decision.id > 1500)
            .distinct()
        ).all()
        assert served == [(lineages[1].id,)]
    # ε = 0.9 explores nine decisions in ten; what replaced it does far better at the end.
    rows = {row["policy"]: row for row in result.summary()}
    assert rows["keyart"]["vs_oracle"] > 0.8


def test_keyart_simulate_optimises_when_keyart_auto_optimize_is_on(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`keyart simulate` with KEYART_AUTO_OPTIMIZE: the same learner steps as `keyart learn`,
    so a poor `--vw-args` is replaced by what the optimiser adopts, and the run says so."""
    from click.testing import CliRunner

    from web.cli import main

    world = tmp_path / "tiny.json"
    world.write_text(json.dumps(TINY_WORLD))
    env = {
        **cli_env,
        "KEYART_AUTO_OPTIMIZE": "1",
        "KEYART_OPTIMIZE_MIN_EVENTS": "1000",
        # As the simulator test above: the policy's own draws from the start, so the log
        # says something about other settings.
        "KEYART_APPRENTICE_EXAMPLES": "0",
    }
    result = CliRunner().invoke(
        main,
        [
            "simulate",
            "--world",
            str(world),
            "--decisions",
            "3000",
            "--vw-args",
            "--cb_explore_adf --epsilon 0.9",
            "--png",
            str(tmp_path / "regret.png"),
            "--json",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    (keyart, *_) = json.loads(result.output[result.output.index("{") :])["summary"]
    (run,) = keyart["optimizations"]
    assert run["adopted"] is not None and run["verdict"].startswith("adopt"), run["verdict"]
    assert len(keyart["switches"]) == 1

"""Featurisation and the decision engine's configuration."""

from __future__ import annotations

import shlex

import pytest
import vowpal_wabbit_next as vw

from bandit.config import (
    NAMESPACES,
    ExplorationConfig,
    FeatureConfig,
    check_exploration_args,
    check_namespaces,
    compose_vw_args,
)
from bandit.features import Candidate, example_lines, feature_tokens
from bandit.rewards import RewardConfig
from web.config import DEFAULT_VW_ARGS, ConfigError, load_settings


def test_namespaces_do_not_share_a_first_letter() -> None:
    firsts = [name[0] for name in NAMESPACES.values()]
    assert len(set(firsts)) == len(firsts)
    with pytest.raises(ValueError, match="share the first letter 't'"):
        check_namespaces({"context": "user", "slot": "title", "action": "thumbnail"})
    with pytest.raises(ValueError, match="start with a letter"):
        check_namespaces({"context": "_u"})


def test_example_lines_use_the_namespaces() -> None:
    lines = example_lines(
        {"segment": "kids"}, {"title": "show"}, [Candidate("a1", {"tag": ["face"]})], (0, -1, 0.5)
    )
    assert lines == ["shared |u segment=kids |t title=show", "0:-1:0.5 |a id=a1 tag=face"]
    # VW parses them as one multi-line example.
    workspace = vw.Workspace(shlex.split(DEFAULT_VW_ARGS))
    parser = vw.TextFormatParser(workspace)
    workspace.learn_one([parser.parse_line(line) for line in lines])


def test_numbers_are_scaled_or_bucketed() -> None:
    tokens = feature_tokens({"brightness": 0.25, "age": 35, "balance": -300.0, "big": 1e9})
    assert tokens == ["age=p5", "balance=n8", "big=p29", "brightness:0.25"]
    assert feature_tokens({"x": float("nan"), "y": float("inf"), "z": None}) == []
    assert feature_tokens({"kids": True}) == ["kids=true"]


def test_hour_and_weekday_are_cyclic() -> None:
    def point(hour: float) -> tuple[float, float]:
        sin, cos = (float(t.split(":")[1]) for t in feature_tokens({"hour": hour}))
        return sin, cos

    late, early, noon = point(23), point(0), point(12)
    near = (late[0] - early[0]) ** 2 + (late[1] - early[1]) ** 2
    far = (noon[0] - early[0]) ** 2 + (noon[1] - early[1]) ** 2
    assert near < 0.1 < 3.9 < far
    assert [t.split(":")[0] for t in feature_tokens({"weekday": 6})] == [
        "weekday_sin",
        "weekday_cos",
    ]


def test_timestamps_become_hour_and_weekday_never_raw() -> None:
    iso = feature_tokens({"timestamp": "2026-11-28T21:30:00+00:00"})
    epoch = feature_tokens({"timestamp": 1795901400})  # the same moment
    millis = feature_tokens({"timestamp": 1795901400000})
    assert iso == epoch == millis
    assert [t.split(":")[0] for t in iso] == [
        "timestamp_hour_sin",
        "timestamp_hour_cos",
        "timestamp_weekday_sin",
        "timestamp_weekday_cos",
    ]
    assert feature_tokens({"timestamp": "not a time"}) == []


def test_identifying_keys_are_dropped_and_syntax_is_escaped() -> None:
    assert feature_tokens({"user_id": "u-1", "event_id": "e", "segment": "a b|c:d"}) == [
        "segment=a_b_c_d"
    ]
    assert feature_tokens({"tag": ["x y", None]}) == ["tag=x_y"]


def test_feature_config_makes_interactions_and_bits() -> None:
    assert FeatureConfig().vw_args() == "-q ua -q ta -b 18"
    pairs = FeatureConfig.parse_interactions("context*action, slot*action, context*slot")
    assert FeatureConfig(pairs, 20).vw_args() == "-q ua -q ta -q ut -b 20"
    with pytest.raises(ValueError, match="ROLE"):
        FeatureConfig.parse_interactions("viewer*action")
    with pytest.raises(ValueError, match="hash bits"):
        FeatureConfig(hash_bits=40)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ("--epsilon 0.1", "--cb_explore_adf"),
        ("--cb_explore_adf -q ua", "KEYART_INTERACTIONS"),
        ("--cb_explore_adf -b 24", "KEYART_HASH_BITS"),
        ("--cb_explore_adf -f model.vw", "writes a model file"),
        ("--cb_explore_adf --data=x", "reads a data file"),
        ("--cb_explore_adf 'unclosed", "split"),
    ],
)
def test_exploration_args_are_checked(args: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_exploration_args(args)


def test_composed_args_start_vw() -> None:
    args = compose_vw_args("--cb_explore_adf --squarecb --gamma_scale 10", FeatureConfig())
    vw.Workspace(shlex.split(args))
    assert args.endswith("--quiet -q ua -q ta -b 18")


def test_configs_validate() -> None:
    with pytest.raises(ValueError, match="floor"):
        ExplorationConfig(floor=0.6)
    with pytest.raises(ValueError, match="apprentice"):
        ExplorationConfig(apprentice_examples=-1)
    with pytest.raises(ValueError, match="aggregation"):
        RewardConfig(aggregation="mean")
    with pytest.raises(ValueError, match="finite"):
        RewardConfig({"impression": 0.0, "click": float("nan")})


def test_reward_aggregation() -> None:
    events = [("click", 1.0), ("play", 1.0), ("impression", 1.0)]
    values = {"click": 0.4, "play": 0.8, "impression": 0.0}
    assert RewardConfig(values).reward(events) == 1.0  # 1.2 clipped
    assert RewardConfig(values, aggregation="max").reward(events) == 0.8
    assert RewardConfig(values).reward([]) == 0.0
    assert RewardConfig(values).reward([("click", 1.0)]) == 0.4


def _env(tmp_path, **overrides: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"KEYART_VAR_DIR": str(tmp_path), "KEYART_SECRET_KEY": "x" * 20, **overrides}


def test_settings_build_the_engine_from_the_environment(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(
        _env(
            tmp_path,
            KEYART_VW_ARGS="--cb_explore_adf --epsilon 0.05",
            KEYART_INTERACTIONS="context*action",
            KEYART_HASH_BITS="16",
            KEYART_PROBABILITY_FLOOR="0.01",
            KEYART_PROBABILITY_FLOOR_MIN="0.002",
            KEYART_FLOOR_DECAY_EXAMPLES="800",
            KEYART_APPRENTICE_EXAMPLES="50",
            KEYART_STICKY_PERIOD="86400",
            KEYART_REWARD_VALUES="click=0.5, play=1, impression=0, add_to_list=0.3",
            KEYART_REWARD_AGGREGATION="max",
        )
    )
    assert settings.vw_args == "--cb_explore_adf --epsilon 0.05 --quiet -q ua -b 16"
    exploration = settings.exploration()
    assert exploration == ExplorationConfig(
        0.01, 50, 86400.0, exploration.viewer_key, floor_min=0.002, floor_decay_examples=800
    )
    assert len(exploration.viewer_key) == 32  # derived from the secret key (see test_public_api)
    assert settings.reward_values == {
        "click": 0.5,
        "play": 1.0,
        "impression": 0.0,
        "add_to_list": 0.3,
    }
    assert settings.reward_aggregation == "max"
    assert load_settings(_env(tmp_path)).vw_args == DEFAULT_VW_ARGS


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KEYART_VW_ARGS", "--cb_explore_adf --no-such-option"),
        ("KEYART_VW_ARGS", "--cb_explore_adf -q ua"),
        ("KEYART_VW_ARGS", "--cb_adf"),
        ("KEYART_HASH_BITS", "many"),
        ("KEYART_HASH_BITS", "64"),
        ("KEYART_INTERACTIONS", "user*art"),
        ("KEYART_PROBABILITY_FLOOR", "0.7"),
        ("KEYART_PROBABILITY_FLOOR", "nan"),
        ("KEYART_APPRENTICE_EXAMPLES", "1.5"),
        ("KEYART_APPRENTICE_EXAMPLES", "-3"),
        ("KEYART_STICKY_PERIOD", "0"),
        ("KEYART_REWARD_VALUES", "click=1"),
        ("KEYART_REWARD_VALUES", "click=lots,impression=0"),
        ("KEYART_REWARD_VALUES", "click,impression=0"),
        ("KEYART_REWARD_AGGREGATION", "mean"),
        ("KEYART_REWARD_WAIT", "inf"),
        ("KEYART_DECISION_COMMIT_MAX", "0"),
        ("KEYART_DECISION_COMMIT_DELAY", "-0.001"),
        ("KEYART_DECISION_COMMIT_DELAY", "5"),
        ("KEYART_DECISION_COMMIT_DELAY", "soon"),
        ("KEYART_REWARD_SETTLE", "-1"),
    ],
)
def test_bad_settings_name_their_variable(tmp_path, name: str, value: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as error:
        load_settings(_env(tmp_path, **{name: value}))
    assert name in str(error.value)


def test_the_commit_delay_is_2_ms_on_either_database_unless_set(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Measured on both (benchmarks/README.md); set, it is what was set, on either.
    def delay(**env: str) -> float:
        return load_settings(_env(tmp_path, **env)).decision_commit_delay

    postgres = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    assert delay() == 0.002
    assert delay(KEYART_DATABASE_URL=postgres) == 0.002
    assert delay(KEYART_DECISION_COMMIT_DELAY="0.004") == 0.004
    assert delay(KEYART_DATABASE_URL=postgres, KEYART_DECISION_COMMIT_DELAY="0") == 0.0
    assert delay(KEYART_DECISION_COMMIT_DELAY="") == 0.002

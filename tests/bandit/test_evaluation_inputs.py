"""Bad input to offline evaluation and the simulator, from the command line in: each is refused
with a message naming what is wrong, never a traceback, a stored evaluation of nothing, or NaN."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bandit.dsjson import to_dsjson
from bandit.evaluation import EvaluationConfig, evaluate_events, logged_events, save_evaluation
from bandit.models import Evaluation
from bandit.rewards import RewardConfig
from tests.bandit.test_dsjson import GOOD
from tests.bandit.test_simulator import TINY_WORLD
from web.cli import main


def _refused(result: Result, message: str) -> None:
    # A ClickException ends in SystemExit(1); anything else escaping is a traceback.
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output, result.output


@pytest.mark.parametrize("clip", [math.nan, math.inf, 0.0, -1.0])
def test_clip_must_be_positive_and_finite(clip: float) -> None:
    with pytest.raises(ValueError, match="clip must be a positive finite number"):
        EvaluationConfig(clip=clip)


def test_a_bootstrap_seed_must_be_non_negative() -> None:
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        EvaluationConfig(seed=-1)


def test_an_empty_selection_is_an_error_not_nan() -> None:
    with pytest.raises(ValueError, match="no decisions in the selection"):
        evaluate_events([], EvaluationConfig(candidates=["--cb_explore_adf"]))


def test_a_window_that_ends_before_it_starts_is_refused_when_asked_for(session: Session) -> None:
    later, earlier = datetime(2026, 2, 1), datetime(2026, 1, 1)
    with pytest.raises(ValueError, match=r"since .* must be before until"):
        logged_events(session, RewardConfig(), since=later, until=earlier)  # not iterated
    with pytest.raises(ValueError, match=r"since .* must be before until"):
        save_evaluation(session, {"events": 5}, since=later, until=earlier)
    with pytest.raises(ValueError, match="an evaluation of no decisions is not stored"):
        save_evaluation(session, {"events": 0})


def test_evaluate_refuses_bad_options_and_stores_nothing(
    cli_env: dict[str, str], session: Session
) -> None:
    runner = CliRunner()
    window = ["--since", "2026-02-01", "--until", "2026-01-01"]
    _refused(runner.invoke(main, ["evaluate", *window], env=cli_env), "since (2026-02-01")
    _refused(runner.invoke(main, ["evaluate", "--json"], env=cli_env), "no decisions in the")
    _refused(runner.invoke(main, ["evaluate", "--clip", "nan"], env=cli_env), "clip must be")
    assert session.scalar(select(func.count()).select_from(Evaluation)) == 0


def test_evaluate_names_the_bad_dsjson_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    good = to_dsjson(GOOD)
    text = json.dumps(good)
    multi = json.dumps(good["c"]["_multi"])
    cases = {
        "line 2: JSON nested too deeply": f"{'[' * 100_000}{']' * 100_000}",
        "line 2: duplicate key '_multi'": text.replace(
            '"_multi": ', f'"_multi": {multi}, "_multi": '
        ),
    }
    runner = CliRunner()
    for message, bad in cases.items():
        path = tmp_path / "log.json"
        path.write_text(f"{text}\n{bad}\n")
        _refused(runner.invoke(main, ["evaluate", "--dsjson", str(path)], env=cli_env), message)


def _simulate(tmp_path: Path, *args: str) -> Result:
    env = {"KEYART_VAR_DIR": str(tmp_path / "var"), "KEYART_SECRET_KEY": "x" * 20}
    return CliRunner().invoke(main, ["simulate", "--decisions", "10", *args], env=env)


TWO_HUGE = [{"name": "a", "weight": 1e308}, {"name": "b", "weight": 1e308}]


@pytest.mark.parametrize(
    ("world", "message"),
    [
        ({**TINY_WORLD, "segments": TWO_HUGE}, "segments: weights must add up to a finite"),
        ({**TINY_WORLD, "seed": -1}, "seed: Input should be greater than or equal to 0"),
        # Was reported as "VW rejected --vw-args: maximum recursion depth exceeded".
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, "is not valid json: nested too deeply"),
    ],
)
def test_simulate_names_what_is_wrong_with_the_world_file(
    tmp_path: Path, world: dict | str, message: str
) -> None:
    path = tmp_path / "world.json"
    path.write_text(world if isinstance(world, str) else json.dumps(world))
    _refused(_simulate(tmp_path, "--world", str(path)), message)


def test_simulate_refuses_a_negative_traffic_seed(tmp_path: Path) -> None:
    _refused(_simulate(tmp_path, "--seed", "-1"), "seed must be an integer in [0, 2**63)")

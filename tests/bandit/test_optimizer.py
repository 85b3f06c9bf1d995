"""Optimisation from the log: a clearly better setting is adopted (stored, so the learner
starts a lineage for it), a worse one is refused, and every run is stored with its table."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy.orm import Session

from bandit.config import DEFAULT_EXPLORATION_ARGS, DEFAULT_VW_ARGS
from bandit.evaluation import latest_evaluation
from bandit.lineages import store_settings, stored_settings
from bandit.models import utcnow
from bandit.optimizer import LearningCandidate
from bandit.policy import Policy
from tests.bandit.world import catalog, write_log
from tests.helpers import runtime
from web.cli import main, optimize_settings

SQUARECB = "--cb_explore_adf --squarecb"
NEARLY_UNIFORM = "--cb_explore_adf --epsilon 0.9"


def test_a_vw_command_line_splits_back_into_its_settings() -> None:
    candidate, bits = LearningCandidate.from_vw_args(DEFAULT_VW_ARGS)
    assert candidate == LearningCandidate(DEFAULT_EXPLORATION_ARGS, "context*action, slot*action")
    assert bits == 18
    assert candidate.vw_args(bits) == DEFAULT_VW_ARGS


@pytest.fixture
def logged(app: Flask, session: Session) -> Flask:
    # Two segments that want opposite looks (click rates 0.5 against 0.05), served at random.
    write_log(session, Policy(DEFAULT_VW_ARGS), catalog(3), 900, random.Random(11))
    return app


def test_a_clearly_better_setting_is_adopted(logged: Flask, session: Session) -> None:
    settings = replace(runtime(logged).settings, retrain_days=0)
    store_settings(session, {"KEYART_VW_ARGS": NEARLY_UNIFORM}, utcnow())
    session.commit()
    run = optimize_settings(session, settings, candidates=(SQUARECB,))
    assert run.adopt == LearningCandidate(SQUARECB, "context*action, slot*action")
    serving, best = run.rows
    assert serving["serving"] and serving["exploration_args"].startswith(NEARLY_UNIFORM)
    assert best["ci95"][0] > serving["estimate"]
    # The gain is the difference of the two estimates, with a paired interval above zero.
    assert best["gain"] == pytest.approx(best["estimate"] - serving["estimate"])
    assert 0 < best["gain_ci95"][0] < best["gain"] < best["gain_ci95"][1]
    assert serving["gain"] == 0
    assert stored_settings(session)["KEYART_VW_ARGS"] == SQUARECB
    stored = latest_evaluation(session, None)
    assert stored is not None and stored.result["kind"] == "optimization"
    assert stored.result["adopted"]["exploration_args"] == SQUARECB
    assert "adopt" in stored.result["verdict"]


def test_a_worse_setting_is_refused_and_nothing_changes(logged: Flask, session: Session) -> None:
    settings = replace(runtime(logged).settings, retrain_days=0)
    run = optimize_settings(session, settings, candidates=(NEARLY_UNIFORM,))
    assert run.adopt is None
    assert run.verdict.startswith("keep the serving settings")
    assert run.rows[1]["gain_ci95"][1] < 0  # worse, with 95% confidence
    assert stored_settings(session) == {}
    assert latest_evaluation(session, None).result["adopted"] is None


def test_optimize_prints_its_table_and_verdict(
    logged: Flask, cli_env: dict[str, str]
) -> None:
    result = CliRunner().invoke(
        main,
        ["optimize", "--candidate", NEARLY_UNIFORM, "--dry-run"],
        env={**cli_env, "KEYART_RETRAIN_DAYS": "0"},
    )
    assert result.exit_code == 0, result.output
    assert f"| `{DEFAULT_EXPLORATION_ARGS}` (serving) |" in result.output
    assert "keep the serving settings" in result.output


def test_optimize_on_an_empty_log_says_so(app: Flask, cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(main, ["optimize"], env=cli_env)
    assert result.exit_code == 1
    assert "no decisions whose reward window has closed" in result.output

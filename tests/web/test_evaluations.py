"""Offline evaluation through the CLI and the editor API, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from bandit.decisions import DecisionRequest
from bandit.features import Candidate
from bandit.learner import learn_once
from bandit.models import utcnow
from bandit.policy import Policy
from bandit.rewards import Event, RewardConfig, record_events
from bandit.simulator import loss_split
from tests.bandit.test_simulator import TINY_WORLD
from tests.helpers import decide
from web.cli import main
from web.config import Settings

N = 240


def _log(session: Session, settings: Settings) -> None:
    """N decisions for one title, two hours old, where segment a clicks c0 and b clicks c2."""
    rng = random.Random(4)
    then = utcnow() - timedelta(hours=2)
    candidates = [Candidate(f"c{i}", {"tag": [f"look{i}"]}) for i in range(3)]
    requests = [
        DecisionRequest(
            slot="space-show",
            candidates=candidates,
            context={"segment": rng.choice(["a", "b"])},
            slot_features={"title": "space-show"},
        )
        for _ in range(N)
    ]
    decisions = decide(session, Policy(settings.vw_args), requests, rng, now=then)
    session.commit()
    clicks = [
        Event(d.event_id, "click")
        for d in decisions
        if d.chosen_index == (0 if d.context["segment"] == "a" else 2) and rng.random() < 0.7
    ]
    record_events(session, clicks, reward_wait=600, known_types=("click", "impression"), now=then)
    session.commit()


def test_evaluate_the_sql_log_and_read_it_from_the_editor_api(
    client: FlaskClient,
    session: Session,
    settings: Settings,
    editor_headers: dict[str, str],
    cli_env: dict[str, str],
) -> None:
    response = client.post(
        "/api/v1/titles", json={"id": "space-show", "name": "Space Show"}, headers=editor_headers
    )
    assert response.status_code == 201
    empty = client.get("/api/v1/evaluations/latest", headers=editor_headers)
    assert empty.status_code == 200 and empty.json == {"catalog": None}
    _log(session, settings)
    learned = learn_once(session, settings.vw_args, RewardConfig(wait_seconds=600))
    assert learned.learned == N

    runner = CliRunner()
    result = runner.invoke(main, ["evaluate", "--json"], env=cli_env)
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)
    assert evaluated["events"] == N and evaluated["source"] == "sql"
    kinds = {p["kind"]: p for p in evaluated["policies"]}
    assert set(kinds) == {"logged", "uniform", "editor_default", "snapshot", "candidate"}
    assert kinds["snapshot"]["version"] == learned.version
    # The progressive learner picks up who clicks what and beats picking at random.
    assert (
        kinds["candidate"]["estimates"]["dr"]["value"]
        > kinds["uniform"]["estimates"]["dr"]["value"]
    )

    latest = client.get("/api/v1/evaluations/latest", headers=editor_headers)
    assert latest.status_code == 200
    assert latest.json["catalog"]["events"] == N
    assert latest.json["catalog"]["id"] == evaluated["evaluation_id"]
    assert latest.json["catalog"]["title"] is None
    assert "title" not in latest.json
    # The catalog run also stored each title's share of it.
    assert evaluated["titles_saved"] == 1
    share = client.get("/api/v1/evaluations/latest?title=space-show", headers=editor_headers)
    assert share.json["title"]["events"] == N
    assert share.json["title"]["scope"].startswith("this title's events")

    table = runner.invoke(main, ["evaluate", "--title", "space-show"], env=cli_env)
    assert table.exit_code == 0, table.output
    assert "uniform" in table.output and "dr" in table.output
    titled = client.get("/api/v1/evaluations/latest?title=space-show", headers=editor_headers)
    assert titled.json["title"]["title"] == "space-show"
    assert titled.json["title"]["id"] > share.json["title"]["id"]
    assert "scope" not in titled.json["title"]
    assert titled.json["title"]["events"] == N
    assert titled.json["catalog"]["id"] == evaluated["evaluation_id"]

    unknown = client.get("/api/v1/evaluations/latest?title=nope", headers=editor_headers)
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "unknown_title"
    too_long = client.get(f"/api/v1/evaluations/latest?title={'x' * 201}", headers=editor_headers)
    assert too_long.status_code == 422
    assert client.get("/api/v1/evaluations/latest").status_code == 401
    assert "/api/v1/evaluations/latest" in client.get("/api/v1/openapi.json").json["paths"]


def test_export_then_evaluate_the_dsjson_file(
    session: Session, settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    _log(session, settings)
    runner = CliRunner()
    path = tmp_path / "log.json"
    exported = runner.invoke(main, ["export", "--dsjson", str(path)], env=cli_env)
    assert exported.exit_code == 0, exported.output
    assert f"exported {N} decisions" in exported.output
    lines = path.read_text().splitlines()
    assert len(lines) == N
    first = json.loads(lines[0])
    assert first["_label_Action"] == first["_labelIndex"] + 1
    backwards = tmp_path / "backwards.json"
    refused = runner.invoke(
        main,
        ["export", "--dsjson", str(backwards), "--since", "2026-03-02", "--until", "2026-03-01"],
        env=cli_env,
    )
    assert refused.exit_code == 1 and "must be before until" in refused.output
    assert refused.exception is None or isinstance(refused.exception, SystemExit)
    assert list(tmp_path.glob("backwards.json*")) == []  # not even a partial file

    args = "--cb_explore_adf --epsilon 0.1 -q ua"
    result = runner.invoke(
        main, ["evaluate", "--dsjson", str(path), "--vw-args", args, "--json"], env=cli_env
    )
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)
    assert evaluated["events"] == N
    assert [p["vw_args"] for p in evaluated["policies"] if p["kind"] == "candidate"] == [args]

    lines[1] = '{"_label_cost": -1'
    path.write_text("\n".join(lines))
    broken = runner.invoke(main, ["evaluate", "--dsjson", str(path)], env=cli_env)
    assert broken.exit_code != 0
    assert "line 2: not valid JSON" in broken.output


def test_evaluate_refuses_bad_arguments(cli_env: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    no_explore = runner.invoke(main, ["evaluate", "--vw-args", "--epsilon 0.1"], env=cli_env)
    assert no_explore.exit_code != 0
    assert "must include --cb_explore_adf" in no_explore.output
    clip = runner.invoke(main, ["evaluate", "--clip", "0"], env=cli_env)
    assert clip.exit_code != 0
    path = tmp_path / "log.json"
    path.write_text("")
    empty = runner.invoke(main, ["evaluate", "--dsjson", str(path), "--json"], env=cli_env)
    assert empty.exit_code == 0, empty.output
    # Strict JSON: an empty log's undefined estimates are null, not NaN.
    logged = json.loads(empty.output, parse_constant=pytest.fail)["policies"][0]
    assert logged["estimates"]["on_policy"]["value"] is None
    table = runner.invoke(main, ["evaluate", "--dsjson", str(path)], env=cli_env)
    assert table.exit_code == 0 and table.output.strip() == "0 events: nothing to estimate"
    bogus = runner.invoke(
        main,
        ["evaluate", "--dsjson", str(path), "--vw-args", "--cb_explore_adf --bogus"],
        env=cli_env,
    )
    assert bogus.exit_code != 0
    assert "VW rejected the arguments" in bogus.output


def test_simulate_command(tmp_path: Path) -> None:
    env = {"KEYART_VAR_DIR": str(tmp_path / "var"), "KEYART_SECRET_KEY": "x" * 20}
    world = tmp_path / "world.json"
    world.write_text(json.dumps(TINY_WORLD))
    png = tmp_path / "regret.png"
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["simulate", "--world", str(world), "--decisions", "600", "--png", str(png), "--json"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary[0]["policy"] == "keyart"
    assert {row["policy"] for row in summary} >= {"oracle", "thompson", "uniform"}
    assert png.read_bytes()[:4] == b"\x89PNG"
    # The same run in words: the table, then where keyart's loss is.
    text = runner.invoke(
        main, ["simulate", "--world", str(world), "--decisions", "600", "--png", str(png)], env=env
    )
    assert text.exit_code == 0, text.output
    assert loss_split(summary[0]) in text.output.splitlines()

    world.write_text(json.dumps({**TINY_WORLD, "segments": [{"name": "a", "weight": 0}]}))
    bad = runner.invoke(main, ["simulate", "--world", str(world)], env=env)
    assert bad.exit_code != 0
    assert "segments.0.weight" in bad.output
    bad_args = runner.invoke(main, ["simulate", "--vw-args", "--cb_explore_adf --bogus"], env=env)
    assert bad_args.exit_code != 0
    assert "VW rejected --vw-args" in bad_args.output
    bad_url = runner.invoke(main, ["simulate", "--database-url", "mysql://x/y"], env=env)
    assert bad_url.exit_code != 0
    assert "--database-url must be" in bad_url.output

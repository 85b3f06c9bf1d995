"""The Personalizer-compatible API, driven by Azure's own SDK (`azure-ai-personalizer`
1.0.0b1, unmodified) against a live `keyart serve`, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient, PersonalizerClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from click.testing import CliRunner

from tests.conftest import POSTGRES_URL
from tests.live import LiveServer
from web.cli import main
from web.db import make_engine, scratch_database, upgrade

ROOT = Path(__file__).resolve().parents[2]
API = "api-version=2022-09-01-preview"
# Short enough for tests to wait out; the learner scores a decision this long after it.
REWARD_WAIT = 1.5


def cli(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


class Server:
    """A `keyart serve` (no embedded learner: tests run `keyart learn --once` when they
    want a pass) and SDK clients for it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {
            **env,
            "KEYART_REWARD_WAIT": str(REWARD_WAIT),
            "KEYART_REWARD_SETTLE": "0",
            "KEYART_POLICY_POLL": "0.1",
        }
        self.token = cli(self.env, "editor", "create", "ranker@example.com").split()[-1]
        self.live = LiveServer(self.env, log_path, ("--no-learner", "--workers", "2"))
        self.live.start()
        self.base = self.live.base
        key = AzureKeyCredential(self.token)
        self.client = PersonalizerClient(self.base, key)
        self.admin = PersonalizerAdministrationClient(self.base, key)

    def learn(self) -> str:
        """Wait out the reward window, then one learning pass; its report."""
        time.sleep(REWARD_WAIT + 0.2)
        return cli(self.env, "learn", "--once")

    def raw(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        """A request the SDK would not send: (status, parsed JSON body or None)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Ocp-Apim-Subscription-Key"] = key
        call = urllib.request.Request(f"{self.base}{path}", data, headers, method=method)
        try:
            with urllib.request.urlopen(call, timeout=30) as answer:
                text = answer.read()
                return answer.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self) -> None:
        self.client.close()
        self.admin.close()
        self.live.stop()
        errors = self.live.log()
        assert "Traceback" not in errors, errors


@pytest.fixture
def server(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    started = Server(cli_env, tmp_path / "serve.log")
    yield started
    started.stop()


@contextlib.contextmanager
def fresh_instance(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """A second keyart, on an empty database of the same kind as `database_url`."""
    with contextlib.ExitStack() as stack:
        if database_url.startswith("postgresql"):
            url = stack.enter_context(scratch_database(POSTGRES_URL, "keyart_fresh"))
        else:
            url = f"sqlite:///{tmp_path / 'fresh.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        other = Server(
            {
                "KEYART_DATABASE_URL": url,
                "KEYART_VAR_DIR": str(tmp_path / "fresh-var"),
                "KEYART_SECRET_KEY": "another-secret-key-0123456789",
            },
            tmp_path / "fresh-serve.log",
        )
        try:
            yield other
        finally:
            other.stop()


ACTIONS = [
    {"id": "news", "features": [{"topic": "news", "length": "short"}]},
    {"id": "sport", "features": [{"topic": "sport"}]},
    {"id": "film", "features": [{"topic": "film", "length": "long"}]},
]
# Two contexts, each with its own best action: what the loop must find.
CONTEXTS = {
    "morning": ([{"time": {"part": "morning"}}, {"device": "phone"}], "news"),
    "evening": ([{"time": {"part": "evening"}}, {"device": "tv"}], "film"),
}


def service_configuration(**changes: Any) -> dict[str, Any]:
    return {
        "rewardWaitTime": f"PT{REWARD_WAIT}S",
        "defaultReward": 0.0,
        "rewardAggregation": "earliest",
        "explorationPercentage": 0.05,
        "modelExportFrequency": "PT1M",
        "logRetentionDays": -1,
        "modelRetrainDays": 0,
        "learningMode": "Online",
        **changes,
    }


def traffic(client: PersonalizerClient, world: random.Random, n: int) -> dict[str, float]:
    """`n` ranks per context, each clicked (reward 1) with the world's rate for its choice
    (the context's best action 80% of the time, the others 15%); answers the share of
    each context's ranks that chose its best action."""
    shares = {}
    for name, (context, best) in CONTEXTS.items():
        hits = 0
        for _ in range(n):
            ranked = client.rank({"contextFeatures": context, "actions": ACTIONS})
            assert ranked["eventId"] and len(ranked["ranking"]) == 3
            assert sum(r["probability"] for r in ranked["ranking"]) == pytest.approx(1.0)
            hits += ranked["rewardActionId"] == best
            if world.random() < (0.8 if ranked["rewardActionId"] == best else 0.15):
                client.reward(ranked["eventId"], {"value": 1.0})
        shares[name] = hits / n
    return shares


def test_the_loop_learns_each_contexts_best_action_and_its_model_moves(
    server: Server, database_url: str, tmp_path: Path
) -> None:
    admin, client = server.admin, server.client
    config = admin.update_service_configuration(service_configuration())
    assert config["explorationPercentage"] == 0.05 and config["learningMode"] == "Online"
    assert admin.get_service_configuration()["rewardAggregation"] == "earliest"

    world = random.Random(7)
    shares = traffic(client, world, 60)
    assert min(shares.values()) < 0.8  # a model that knows nothing: about a third each
    for _round in range(8):
        assert "policy version" in server.learn()
        time.sleep(0.5)  # the serving processes poll for the new model every 0.1 s
        shares = traffic(client, world, 60)
        if min(shares.values()) >= 0.8:
            break
    assert min(shares.values()) >= 0.8, shares
    time.sleep(REWARD_WAIT + 0.2)  # the last ranks' window closes: they count below

    # The decisions are the log's like any other: exported to DSJSON under their slot.
    exported = tmp_path / "personalizer.dsjson"
    assert "exported" in cli(
        server.env, "export", "--dsjson", str(exported), "--title", "personalizer"
    )
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) >= 120 and {len(line["c"]["_multi"]) for line in lines} == {3}

    # Model and log properties.
    assert admin.get_model_properties()["lastModifiedTime"]
    logs = admin.get_log_properties()["dateRange"]
    assert logs["from"] <= logs["to"]

    # An evaluation over the log: the online policy against baseline, random, a policy of
    # our own, and the optimiser's candidates.
    now = datetime.now(UTC)
    evaluation = {
        "name": "exploration",
        "startTime": (now - timedelta(hours=1)).isoformat(),
        "endTime": (now + timedelta(minutes=1)).isoformat(),
        "enablePolicyOptimization": True,
        "policies": [{"name": "greedy", "arguments": "--cb_explore_adf --epsilon 0.01 -q ua"}],
    }
    admin.create_evaluation("first-eval", evaluation)
    with pytest.raises(ResourceExistsError):
        admin.create_evaluation("first-eval", evaluation)
    got = admin.get_evaluation(
        "first-eval", start_time=now - timedelta(hours=1), end_time=now + timedelta(minutes=1)
    )
    assert got["status"] == "Succeeded", got
    results = {v["policySource"]: v for v in got["content"]["value"]}
    assert set(results) == {"Online", "Baseline", "Random", "Custom", "OfflineExperimentation"}
    online = results["Online"]["summary"]["expectedReward"]
    random_policy = results["Random"]["summary"]["expectedReward"]
    assert online > random_policy  # the learning loop earned more than chance would have
    assert got["optimalPolicy"]
    assert [e["id"] for e in admin.list_evaluations()] == ["first-eval"]
    admin.apply_from_evaluation({"evaluationId": "first-eval", "policyName": "greedy"})
    assert admin.get_policy() == {
        "name": "greedy",
        "arguments": "--cb_explore_adf --epsilon 0.01 -q ua",
    }
    # Applied policy arguments start a lineage, trained from the log, that then serves...
    learned = server.learn()
    assert "for the new settings learned" in learned and "now serves" in learned, learned
    # ...and going back to the instance's own arguments starts another.
    assert admin.reset_policy()["name"] == "keyart"
    assert "now serves" in server.learn()
    time.sleep(1.0)  # both workers poll (every 0.1 s) and serve the new lineage
    admin.delete_evaluation("first-eval")
    with pytest.raises(ResourceNotFoundError):
        admin.get_evaluation("first-eval", start_time=now, end_time=now)

    # Export the model, import it into a fresh instance: the same rankings there.
    model = b"".join(admin.export_model())
    probe = {"contextFeatures": CONTEXTS["evening"][0], "actions": ACTIONS}

    def probabilities(where: Server) -> dict[str, float]:
        return {r["id"]: r["probability"] for r in where.client.rank(probe)["ranking"]}

    here = probabilities(server)
    with fresh_instance(database_url, tmp_path) as other:
        other.admin.update_service_configuration(service_configuration())
        assert probabilities(other) != pytest.approx(here)  # a new model ranks otherwise
        other.admin.import_model(model)
        deadline = time.monotonic() + 10
        while (there := probabilities(other)) != pytest.approx(here, abs=1e-9):
            assert time.monotonic() < deadline, (there, here)
            time.sleep(0.2)
        assert b"".join(other.admin.export_model()) == model
        status, body = other.raw("PUT", f"/personalizer/model?{API}", "not a model", other.token)
        assert status == 400 and body["error"]["code"] == "BadRequest"

    # Reset the model: back to a model that knows nothing.
    admin.reset_model()
    deadline = time.monotonic() + 10
    while max(probabilities(server).values()) > 0.34:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    admin.delete_logs()
    assert admin.get_log_properties()["dateRange"] == {}


def test_multi_slot_apprentice_logging_only_and_deferred_activation(
    server: Server, tmp_path: Path
) -> None:
    admin, client = server.admin, server.client
    actions = [*ACTIONS, {"id": "music", "features": [{"topic": "music"}]}]

    # Multi-slot: two slots, no action in both, each slot's exclusions kept.
    slots = [
        {"id": "hero", "baselineAction": "news", "features": [{"size": "large"}]},
        {"id": "side/bar", "baselineAction": "sport", "excludedActions": ["film"]},
    ]
    for n in range(20):
        ranked = client.rank_multi_slot(
            {"contextFeatures": CONTEXTS["morning"][0], "actions": actions, "slots": slots}
        )
        chosen = {s["id"]: s["rewardActionId"] for s in ranked["slots"]}
        assert set(chosen) == {"hero", "side/bar"}
        assert chosen["hero"] != chosen["side/bar"] and chosen["side/bar"] != "film"
        if n == 0:
            first = ranked["eventId"]
            client.reward_multi_slot(first, {"reward": [{"slotId": "side/bar", "value": 0.5}]})
            client.activate_multi_slot(first)
    named = client.rank_multi_slot(
        {"actions": actions, "slots": slots, "eventId": "page 1/views?", "deferActivation": True}
    )
    assert named["eventId"] == "page 1/views?"
    client.reward_multi_slot("page 1/views?", {"reward": [{"slotId": "hero", "value": 1}]})
    client.activate_multi_slot("page 1/views?")
    with pytest.raises(ResourceExistsError):
        client.rank_multi_slot({"actions": actions, "slots": slots, "eventId": "page 1/views?"})
    bad = [
        [slots[0], {**slots[1], "id": "hero"}],  # slot ids repeat
        [{**slots[0], "excludedActions": ["news"]}],  # a baseline excluded by its slot
        [slots[0], {**slots[1], "baselineAction": "news"}],  # one baseline for two slots
        [{**slots[0], "baselineAction": "unknown"}],
    ]
    for wrong in bad:
        with pytest.raises(HttpResponseError) as refused:
            client.rank_multi_slot({"actions": actions, "slots": wrong})
        assert refused.value.status_code == 400
    with pytest.raises(HttpResponseError) as refused:
        client.reward_multi_slot(first, {"reward": [{"slotId": "nowhere", "value": 1}]})
    assert refused.value.status_code == 400
    # 21 pages of two slots: the last one's learned because it was activated.
    assert "learned 42 decisions" in server.learn()

    # Apprentice: the baseline (the first action not excluded) every time, learned from.
    admin.update_service_configuration(service_configuration(learningMode="Apprentice"))
    for _ in range(15):
        ranked = client.rank({"actions": actions, "excludedActions": ["news"]})
        assert ranked["rewardActionId"] == "sport"
        assert {r["id"]: r["probability"] for r in ranked["ranking"]} == {
            "sport": 1.0,
            "news": 0.0,
            "film": 0.0,
            "music": 0.0,
        }
        client.reward(ranked["eventId"], {"value": 1.0})
    assert "learned 15 decisions" in server.learn()

    # LoggingOnly: the baseline, logged, never learned, even activated and rewarded.
    admin.update_service_configuration(service_configuration(learningMode="LoggingOnly"))
    for _ in range(5):
        ranked = client.rank({"actions": actions})
        assert ranked["rewardActionId"] == "news"
        client.reward(ranked["eventId"], {"value": 1.0})
        client.activate(ranked["eventId"])
    assert "learned 0 decisions, skipped 5" in server.learn()

    # Deferred activation: learned only when activated; activated without a reward, the
    # default reward. Sum aggregation adds a decision's rewards within the window.
    admin.update_service_configuration(
        service_configuration(defaultReward=0.25, rewardAggregation="sum")
    )
    deferred = [
        client.rank({"actions": actions, "deferActivation": True, "eventId": f"d{n}"})
        for n in range(3)
    ]
    client.activate("d0")  # no reward: the default
    client.activate("d1")
    client.reward("d1", {"value": 0.5})
    client.reward("d1", {"value": 0.25})  # summed: 0.75
    client.reward("d2", {"value": 1.0})  # never activated: not learned
    assert [d["eventId"] for d in deferred] == ["d0", "d1", "d2"]
    assert "learned 2 decisions, skipped 1" in server.learn()
    exported = tmp_path / "deferred.dsjson"
    cli(server.env, "export", "--dsjson", str(exported), "--title", "personalizer")
    costs = {
        line["EventId"]: line["_label_cost"]
        for line in map(json.loads, exported.read_text().splitlines())
    }
    assert costs["d0"] == -0.25 and costs["d1"] == -0.75 and "d2" not in costs
    client.reward("d1", {"value": 0.5})  # too late: kept, not learned, and no error


def test_keys_versions_and_malformed_requests_get_personalizers_errors(server: Server) -> None:
    wrong = PersonalizerClient(server.base, AzureKeyCredential("not-a-token"))
    with pytest.raises(ClientAuthenticationError) as refused:
        wrong.rank({"actions": ACTIONS})
    assert refused.value.status_code == 401
    status, body = server.raw("POST", f"/personalizer/rank?{API}", {"actions": ACTIONS})
    assert status == 401 and body["error"]["code"] == "Unauthorized"
    status, body = server.raw(
        "POST", "/personalizer/rank?api-version=2019-01-01", {"actions": ACTIONS}, server.token
    )
    assert status == 400 and "api-version" in body["error"]["message"]

    too_many = [{"id": f"a{n}", "features": []} for n in range(51)]
    malformed = [
        {},
        {"actions": []},
        {"actions": too_many},
        {"actions": [ACTIONS[0], ACTIONS[0]]},
        {"actions": ACTIONS, "excludedActions": ["news", "sport", "film"]},
        {"actions": ACTIONS, "excludedActions": ["nowhere"]},
        {"actions": ACTIONS, "eventId": "x" * 257},
        {"actions": ACTIONS, "eventId": "tab\there"},
        {"actions": ACTIONS, "contextFeatures": [{"n": 1e400}]},
        {"actions": ACTIONS, "contextFeatures": "morning"},
        {"actions": [{"id": "a", "features": [{"nested": [[1]]}]}]},
        {"actions": [{"id": "a\u0000b"}]},
    ]
    for body in malformed:
        status, answer = server.raw("POST", f"/personalizer/rank?{API}", body, server.token)
        assert status == 400, (body, answer)
        assert set(answer["error"]) >= {"code", "message"}
    status, answer = server.raw("POST", f"/personalizer/rank?{API}", [1, 2], server.token)
    assert status == 400
    slots = [{"id": f"s{n}", "baselineAction": f"a{n}"} for n in range(51)]
    status, _ = server.raw(
        "POST",
        f"/personalizer/multislot/rank?{API}",
        {"actions": too_many, "slots": slots},
        server.token,
    )
    assert status == 400

    client = server.client
    ranked = client.rank({"actions": ACTIONS, "eventId": "once"})
    assert ranked["eventId"] == "once"
    with pytest.raises(ResourceExistsError):
        client.rank({"actions": ACTIONS, "eventId": "once"})
    with pytest.raises(HttpResponseError) as refused:
        client.reward("once", {"value": 2.0})
    assert refused.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        client.reward("never-ranked", {"value": 1.0})
    with pytest.raises(ResourceNotFoundError):
        client.activate("never-ranked")

    admin = server.admin
    for change in (
        {"rewardWaitTime": "PT1H"},  # beyond KEYART_REWARD_WAIT
        {"rewardAggregation": "max"},
        {"explorationPercentage": 1.5},
        {"learningMode": "Sometimes"},
        {"rewardWaitTime": "soon"},
    ):
        with pytest.raises(HttpResponseError) as refused:
            admin.update_service_configuration(service_configuration(**change))
        assert refused.value.status_code == 400, change
    for arguments in ("--epsilon 0.1", "--cb_explore_adf -f model.vw", "--cb_explore_adf --nope"):
        with pytest.raises(HttpResponseError) as refused:
            admin.update_policy({"name": "bad", "arguments": arguments})
        assert refused.value.status_code == 400, arguments
    with pytest.raises(ResourceNotFoundError):
        admin.apply_from_evaluation({"evaluationId": "none", "policyName": "x"})
    with pytest.raises(HttpResponseError) as refused:
        admin.create_evaluation(
            "backwards",
            {"name": "b", "startTime": "2026-01-02T00:00:00Z", "endTime": "2026-01-01T00:00:00Z"},
        )
    assert refused.value.status_code == 400

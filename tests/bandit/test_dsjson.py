"""DSJSON out and in: VW's own parser reads keyart's export, VW's own driver agrees with
keyart's progressive estimate, and malformed input is refused with its line number."""

from __future__ import annotations

import json
import random
import re
import shlex
from pathlib import Path

import pytest
import vowpal_wabbit_next as vw

from bandit.dsjson import DsjsonError, LoggedEvent, read_dsjson, to_dsjson, write_dsjson
from bandit.evaluation import EvaluationConfig, evaluate_dsjson, snapshot_distributions
from bandit.features import Candidate
from bandit.policy import Policy

SEGMENTS = ("teen", "family", "drama")
LIKES = {"teen": "dark", "family": "bright", "drama": "warm"}


def _events(n: int, seed: int = 11) -> list[LoggedEvent]:
    """A log with a known click model: each segment clicks its palette more."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        segment = rng.choice(SEGMENTS)
        candidates = [
            Candidate(f"v{j}", {"tag": [palette], "brightness": round(rng.random(), 3)})
            for j, palette in enumerate(rng.sample(("dark", "bright", "warm", "cool"), 3))
        ]
        distribution = [0.5, 0.3, 0.2]
        chosen = rng.choices(range(3), distribution)[0]
        liked = candidates[chosen].features["tag"] == [LIKES[segment]]
        reward = float(rng.random() < (0.6 if liked else 0.1))
        out.append(
            LoggedEvent(
                event_id=f"e{i}",
                timestamp=f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
                context={"segment": segment, "hour": rng.randrange(24)},
                slot_features={"title": f"t{i % 4}", "genre": ["drama"]},
                candidates=candidates,
                chosen_index=chosen,
                probability=distribution[chosen],
                reward=reward,
                distribution=distribution,
            )
        )
    return out


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "log.json"
    with path.open("w") as out:
        assert write_dsjson(_events(400), out) == 400
    return path


def test_export_fields_follow_dsjson() -> None:
    event = _events(1)[0]
    obj = to_dsjson(event)
    chosen = event.chosen_index
    assert obj["_label_cost"] == -event.reward
    assert obj["_label_probability"] == event.probability
    assert obj["_label_Action"] == chosen + 1
    assert obj["_labelIndex"] == chosen
    assert obj["a"][0] == chosen + 1 and sorted(obj["a"]) == [1, 2, 3]
    assert obj["p"][0] == event.probability and sum(obj["p"]) == pytest.approx(1)
    assert obj["EventId"] == "e0" and obj["Timestamp"] == event.timestamp
    assert set(obj["c"]) == {"u", "t", "_multi"}
    assert obj["c"]["_multi"][0]["a"]["id=v0"] == 1


def test_vw_parser_reads_the_export(log_file: Path) -> None:
    workspace = vw.Workspace(["--cb_explore_adf", "--quiet"])
    parser = vw.DSJsonFormatParser(workspace)
    for line in log_file.read_text().splitlines():
        examples = parser.parse_json(line)
        assert len(examples) == 4  # shared + three actions
        workspace.learn_one(examples)


@pytest.mark.parametrize(
    "args",
    [
        "--cb_explore_adf --epsilon 0.1 -q ua -q ta",
        "--cb_explore_adf --squarecb -q ua",
        "--cb_explore_adf --epsilon 0.05 --cb_type ips",
    ],
)
def test_progressive_estimate_matches_vw_driver(log_file: Path, args: str) -> None:
    output, _ = vw.run_cli_driver(
        [*shlex.split(args), "--dsjson", "-d", str(log_file)], onethread=True
    )
    match = re.search(r"average loss = (-?[0-9.e+-]+)", output)
    assert match, output
    result = evaluate_dsjson(read_dsjson(log_file), EvaluationConfig(candidates=[args]))
    (candidate,) = [p for p in result["policies"] if p["kind"] == "candidate"]
    assert candidate["estimates"]["ips"]["value"] == pytest.approx(-float(match[1]), abs=1e-4)


def test_learned_policy_beats_uniform_offline(log_file: Path) -> None:
    result = evaluate_dsjson(
        read_dsjson(log_file),
        EvaluationConfig(candidates=["--cb_explore_adf --epsilon 0.1 -q ua"]),
    )
    by_kind = {p["kind"]: p for p in result["policies"]}
    assert result["events"] == 400
    logged = by_kind["logged"]["estimates"]["on_policy"]["value"]
    uniform = by_kind["uniform"]["estimates"]["ips"]["value"]
    learned = by_kind["candidate"]["estimates"]["dr"]["value"]
    assert learned > max(logged, uniform)
    for kind in ("uniform", "editor_default", "candidate"):
        for estimate in by_kind[kind]["estimates"].values():
            assert estimate["ci95"][0] <= estimate["value"] <= estimate["ci95"][1]


def test_a_snapshot_scores_dsjson_as_it_scores_its_own_text_examples(log_file: Path) -> None:
    policy = Policy("--cb_explore_adf --epsilon 0.1 -q ua -q ta")
    events = _events(200, seed=5)
    for event in events:
        policy.learn(
            event.context,
            event.slot_features,
            event.candidates,
            event.chosen_index,
            -event.reward,
            event.probability,
        )
    lines = read_dsjson(log_file)[:50]
    from_dsjson = snapshot_distributions(policy, lines)
    for line, event, dist in zip(lines, _events(50), from_dsjson, strict=True):
        assert line.event_id == event.event_id
        text = policy.distribution(event.context, event.slot_features, event.candidates)
        assert list(dist) == pytest.approx(text, abs=1e-9)


def test_a_foreign_dsjson_log_evaluates(tmp_path: Path) -> None:
    rng = random.Random(2)
    lines = []
    for _i in range(60):
        chosen = rng.randrange(2)
        lines.append(
            json.dumps(
                {
                    "_label_cost": -float(chosen == 1),
                    "_label_probability": 0.5,
                    "_label_Action": chosen + 1,
                    "_labelIndex": chosen,
                    "a": [chosen + 1, 2 - chosen],
                    "p": [0.5, 0.5],
                    "c": {
                        "User": {"mood": rng.choice(["happy", "sad"])},
                        "_multi": [{"Action": {"topic": "sports"}}, {"Action": {"topic": "news"}}],
                    },
                }
            )
        )
    path = tmp_path / "foreign.json"
    path.write_text("\n".join(lines) + "\n")
    result = evaluate_dsjson(
        read_dsjson(path), EvaluationConfig(candidates=["--cb_explore_adf -q UA"])
    )
    editor = next(p for p in result["policies"] if p["kind"] == "editor_default")
    # The editor's default is the first action, which never earns anything here.
    assert editor["estimates"]["ips"]["value"] == 0


GOOD = _events(1)[0]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"_label_cost": "x"}, "_label_cost must be a finite number"),
        ({"_label_probability": 0}, r"_label_probability must be in \(0, 1\]"),
        ({"_labelIndex": 7, "_label_Action": 8}, "the chosen action 8 is not one of the 3"),
        (
            {"_labelIndex": 0, "_label_Action": 2},
            r"_label_Action \(2\) must be _labelIndex \(0\) \+ 1",
        ),
        ({"c": {"_multi": []}}, "c._multi must be a non-empty list"),
        ({"c": "x"}, "c \\(the context\\) must be an object"),
    ],
)
def test_malformed_lines_are_named(tmp_path: Path, bad: object, message: str) -> None:
    good = to_dsjson(GOOD)
    broken = json.dumps({**good, **bad}) if isinstance(bad, dict) else str(bad)
    path = tmp_path / "bad.json"
    path.write_text(f"{json.dumps(good)}\n\n{broken}\n")
    with pytest.raises(DsjsonError, match=f"line 3: {message}"):
        read_dsjson(path)


def test_a_line_nested_too_deeply_is_named(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text(f"{json.dumps(to_dsjson(GOOD))}\n{'[' * 100_000}{']' * 100_000}\n")
    with pytest.raises(DsjsonError, match="line 2: JSON nested too deeply"):
        read_dsjson(path)


_GOOD_TEXT = json.dumps(to_dsjson(GOOD))
_MULTI = json.dumps(to_dsjson(GOOD)["c"]["_multi"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Python's json keeps the last `_multi`; VW's parser reads both lists.
        (
            _GOOD_TEXT.replace('"_multi": ', f'"_multi": {_MULTI}, "_multi": ', 1),
            "duplicate key '_multi'",
        ),
        (_GOOD_TEXT.replace('"_label_cost": -', '"_label_cost": NaN, "x": -', 1), "NaN is not"),
        (_GOOD_TEXT.replace('"p": [', '"p": [1e999, ', 1), "p must be a list of finite numbers"),
    ],
)
def test_json_python_reads_but_vw_does_not_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(f"{_GOOD_TEXT}\n{text}\n")
    with pytest.raises(DsjsonError, match=f"line 2: {message}"):
        read_dsjson(path)


def test_actions_vw_reads_beyond_c_multi_are_named(tmp_path: Path) -> None:
    # A `_multi` inside a namespace passes validation, but VW reads it as more actions.
    line = to_dsjson(GOOD)
    line["c"]["u"]["_multi"] = line["c"]["_multi"]
    path = tmp_path / "log.json"
    path.write_text(f"{_GOOD_TEXT}\n{json.dumps(line)}\n")
    lines = read_dsjson(path)
    with pytest.raises(DsjsonError, match=r"line 2: VW read more actions than the 3 in c\._multi"):
        evaluate_dsjson(lines, EvaluationConfig(candidates=["--cb_explore_adf"]))


def test_undecodable_bytes_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(json.dumps(to_dsjson(GOOD)).encode() + b"\n\xff\xfe\n")
    with pytest.raises(DsjsonError, match="line 2: not UTF-8"):
        read_dsjson(path)


def test_per_slot_groups_partition_the_whole_evaluation() -> None:
    from dataclasses import replace

    from bandit.evaluation import evaluate_events

    events = [replace(e, slot=e.slot_features["title"]) for e in _events(200)]
    result = evaluate_events(
        events, EvaluationConfig(candidates=["--cb_explore_adf -q ua"]), by_slot=True
    )
    groups = result["groups"]
    assert sorted(groups) == ["t0", "t1", "t2", "t3"]
    assert sum(g["events"] for g in groups.values()) == 200
    # IPS and DR are means of per-event terms, so the groups' event-weighted values add
    # back up to the whole log's, policy by policy.
    for index, policy in enumerate(result["policies"][1:], start=1):
        for estimator in ("ips", "dr"):
            parts = sum(
                g["events"] * g["policies"][index]["estimates"][estimator]["value"]
                for g in groups.values()
            )
            assert parts / 200 == pytest.approx(policy["estimates"][estimator]["value"])

"""The decision log as VW's DSJSON (the Decision Service's JSON lines), both ways: keyart's
logged events out to a file VW's own tools read, and any DSJSON file in, validated line by line.

One line per decision:
    {"_label_cost": -reward, "_label_probability": p, "_label_Action": chosen + 1,
     "_labelIndex": chosen, "Timestamp": "...Z", "Version": "1", "EventId": "...",
     "a": [chosen + 1, other actions + 1...], "p": [probabilities in a's order],
     "c": {"u": {context features}, "t": {slot features}, "_multi": [{"a": {...}}, ...]}}

Features are written as `{"token": value}` pairs made by `bandit.features.feature_tokens`,
so VW hashes exactly what it hashes from keyart's text-format examples: a model trained on
either reads the other.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from bandit.features import (
    ACTION_NS,
    CONTEXT_NS,
    SLOT_NS,
    Candidate,
    _token,
    feature_tokens,
)


class DsjsonError(ValueError):
    """A DSJSON line is malformed; the message names the line number and what is wrong."""


@dataclass(frozen=True)
class LoggedEvent:
    """One evaluable decision: what was offered, what was chosen with which probability, and
    the reward that came back. Built from the SQL log or from a DSJSON line."""

    event_id: str
    timestamp: datetime | str | None
    context: Mapping[str, Any]
    slot_features: Mapping[str, Any]
    candidates: Sequence[Candidate]
    chosen_index: int
    probability: float
    reward: float
    slot: str = ""
    distribution: Sequence[float] | None = None


@dataclass(frozen=True)
class DsjsonLine:
    """A validated DSJSON decision line: its number in the file, its text, and the fields
    evaluation needs."""

    line_number: int
    text: str
    event_id: str
    timestamp: str | None
    actions: int
    chosen_index: int
    probability: float
    reward: float


def namespace(features: Mapping[str, Any]) -> dict[str, float]:
    """Feature tokens as a DSJSON namespace object: `a=b` → {"a=b": 1}, `x:0.5` → {"x": 0.5}."""
    out: dict[str, float] = {}
    for token in feature_tokens(features):
        name, sep, value = token.partition(":")
        out[name] = float(value) if sep else 1
    return out


def _timestamp(value: datetime | str | None) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds") + "Z"
    return value


def to_dsjson(event: LoggedEvent) -> dict[str, Any]:
    """The DSJSON object of one logged event."""
    chosen = event.chosen_index
    count = len(event.candidates)
    order = [chosen, *(i for i in range(count) if i != chosen)]
    distribution = event.distribution
    if distribution is None or len(distribution) != count:
        # Only the chosen action's probability is known; spread the rest evenly (VW only
        # reads `_label_probability`, `p` is for people's tools).
        rest = (1 - event.probability) / (count - 1) if count > 1 else 0.0
        distribution = [event.probability if i == chosen else rest for i in range(count)]
    actions = [
        {ACTION_NS: {f"id={_token(c.id)}": 1, **namespace(c.features)}} for c in event.candidates
    ]
    return {
        "_label_cost": -event.reward,
        "_label_probability": event.probability,
        "_label_Action": chosen + 1,
        "_labelIndex": chosen,
        "Timestamp": _timestamp(event.timestamp),
        "Version": "1",
        "EventId": event.event_id,
        "a": [i + 1 for i in order],
        "c": {
            CONTEXT_NS: namespace(event.context),
            SLOT_NS: namespace(event.slot_features),
            "_multi": actions,
        },
        "p": [float(distribution[i]) for i in order],
    }


def write_dsjson(events: Iterable[LoggedEvent], out: IO[str]) -> int:
    """Write one DSJSON line per event; answer how many were written."""
    written = 0
    for event in events:
        out.write(json.dumps(to_dsjson(event), separators=(",", ":")))
        out.write("\n")
        written += 1
    return written


def _number(obj: Mapping[str, Any], key: str, line: int) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DsjsonError(f"line {line}: {key} must be a finite number, got {value!r}")
    return float(value)


class _NotStrictJson(Exception):
    """What json's hooks raise; `validate_line` adds the line number."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Python's json keeps only a repeated key's last value, but VW's parser reads every
    # one (a second `_multi` adds actions), so what was validated would not be what VW sees.
    obj = dict(pairs)
    if len(obj) < len(pairs):
        repeated = next(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
        raise _NotStrictJson(f"duplicate key {repeated!r}")
    return obj


def _constant(name: str) -> float:
    # Python reads NaN and Infinity; JSON and VW's parser do not.
    raise _NotStrictJson(f"{name} is not a JSON value")


def validate_line(text: str, line: int) -> DsjsonLine:
    """Check that one line is a labelled cb_explore_adf DSJSON decision."""
    try:
        obj = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except json.JSONDecodeError as error:
        raise DsjsonError(f"line {line}: not valid JSON ({error.msg})") from None
    except _NotStrictJson as error:
        raise DsjsonError(f"line {line}: {error}") from None
    except RecursionError:
        raise DsjsonError(f"line {line}: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise DsjsonError(f"line {line}: expected a JSON object")
    context = obj.get("c")
    if not isinstance(context, dict):
        raise DsjsonError(f"line {line}: c (the context) must be an object")
    multi = context.get("_multi")
    if not isinstance(multi, list) or not multi or not all(isinstance(a, dict) for a in multi):
        raise DsjsonError(f"line {line}: c._multi must be a non-empty list of action objects")
    cost = _number(obj, "_label_cost", line)
    probability = _number(obj, "_label_probability", line)
    if not 0 < probability <= 1:
        raise DsjsonError(f"line {line}: _label_probability must be in (0, 1], got {probability}")
    index = obj.get("_labelIndex")
    action = obj.get("_label_Action")
    if index is None and action is None:
        raise DsjsonError(f"line {line}: _labelIndex or _label_Action is required")
    for key, value in (("_labelIndex", index), ("_label_Action", action)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise DsjsonError(f"line {line}: {key} must be an integer, got {value!r}")
    if index is not None and action is not None and action != index + 1:
        raise DsjsonError(
            f"line {line}: _label_Action ({action}) must be _labelIndex ({index}) + 1"
        )
    chosen = index if index is not None else action - 1
    if not 0 <= chosen < len(multi):
        raise DsjsonError(
            f"line {line}: the chosen action {chosen + 1} is not one of the "
            f"{len(multi)} actions in c._multi"
        )
    if "p" in obj and (
        not isinstance(obj["p"], list)
        or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
            for x in obj["p"]
        )
    ):
        raise DsjsonError(f"line {line}: p must be a list of finite numbers")
    event_id = obj.get("EventId")
    timestamp = obj.get("Timestamp")
    return DsjsonLine(
        line_number=line,
        text=text,
        event_id=str(event_id) if event_id is not None else f"line-{line}",
        timestamp=str(timestamp) if timestamp is not None else None,
        actions=len(multi),
        chosen_index=chosen,
        probability=probability,
        reward=-cost,
    )


def read_dsjson(path: Path | str) -> list[DsjsonLine]:
    """Every decision line of a DSJSON file, validated; blank lines are skipped."""
    return list(iter_dsjson(path))


def iter_dsjson(path: Path | str) -> Iterator[DsjsonLine]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; bytes so a bad line is named
    except OSError as error:
        raise DsjsonError(f"cannot read {path}: {error.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise DsjsonError(f"line {number}: not UTF-8 text") from None
            if text:
                yield validate_line(text, number)

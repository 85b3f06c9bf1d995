"""Featurisation: turn a context, a slot and candidate actions into VW text-format lines.

Namespaces (VW keys a namespace by its first character; `bandit.config` checks they differ):
    u  the viewer's context (segment, country, device, hour...)
    t  the slot being decided (for keyart, the title and its genres)
    a  the candidate action (its id, tags and numeric features)
The default interactions cross u×a and t×a, so the model learns which kind of
action each kind of viewer, and each kind of slot, responds to; because an action is also
described by its tags and image features, what is learned carries over to actions never seen.

Values are never fed raw where their scale would dominate: numbers within [-1, 1] are
weights, larger ones become log-scale buckets, hour and weekday become points on a circle,
timestamps become hour and weekday, and keys that identify one request or viewer are dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from bandit.config import NAMESPACES

CONTEXT_NS = NAMESPACES["context"]
SLOT_NS = NAMESPACES["slot"]
ACTION_NS = NAMESPACES["action"]

# Cyclic context values become a point on a circle, so 23h and 0h are neighbours.
CYCLIC_PERIODS = {"hour": 24.0, "weekday": 7.0}
# A moment is worth its hour and weekday; the raw instant would be a new feature each time.
TIMESTAMP_KEYS = frozenset({"timestamp", "time", "ts", "datetime"})
# Keys naming one viewer or request: a weight per value would only memorise, never generalise.
DROPPED_KEYS = frozenset({"user", "user_id", "viewer_id", "session_id", "request_id", "event_id"})

_UNSAFE = re.compile(r"[\s|:]+")


@dataclass(frozen=True)
class Candidate:
    """One action the policy may choose: an opaque id and its features (not to be mutated:
    the VW tokens are computed once per candidate object and kept)."""

    id: str
    features: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def tokens(self) -> str:
        return " ".join([f"id={_token(self.id)}", *feature_tokens(self.features)])

    @cached_property
    def line(self) -> str:
        """The candidate's unlabelled VW line (`action_line`), made once."""
        return f"|{ACTION_NS} {self.tokens}"

    @cached_property
    def logged(self) -> dict[str, Any]:
        """The candidate as the decision log holds it (shared by every record of it)."""
        return {"id": self.id, "features": dict(self.features)}

    @cached_property
    def logged_json(self) -> str:
        return json.dumps(self.logged)


def _token(text: str) -> str:
    # Spaces, pipes and colons are VW syntax; anything else may stand in a feature name.
    if not text.isascii():
        # VW takes UTF-8: an unpaired surrogate (JSON can carry one) becomes "?", or the
        # example, and every learning batch holding it, would fail.
        text = text.encode("utf-8", "replace").decode()
    return _UNSAFE.sub("_", text.strip()) or "_"


def _number(value: float) -> str:
    # Round float dust (cos 90° = 6e-17) to zero: VW's normalized updates scale by the
    # largest value a feature has shown, and a 1e-17 one makes later updates explode.
    return f"{0.0 if abs(value) < 1e-9 else value:.6g}"


def _cyclic(name: str, value: float, period: float) -> list[str]:
    angle = 2 * math.pi * (value % period) / period
    return [
        f"{name}_sin:{_number(math.sin(angle))}",
        f"{name}_cos:{_number(math.cos(angle))}",
    ]


def _bucket(value: float) -> str:
    """Log-2 magnitude bucket with sign: 2 → `p1`, 35 → `p5`, -300 → `n8`."""
    sign = "n" if value < 0 else "p"
    return f"{sign}{int(math.log2(abs(value)))}"


def _moment(value: Any) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        # Epoch seconds, or milliseconds if it is too large to be seconds.
        seconds = float(value) / 1000.0 if abs(value) > 1e11 else float(value)
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def feature_tokens(features: Mapping[str, Any]) -> list[str]:
    """VW tokens for a feature mapping.

    Strings and booleans are categorical (`key=value`), lists are sets of categories,
    numbers within [-1, 1] are weighted features (`key:value`), larger numbers are log-2
    buckets (`key=p5` for 32..63), the cyclic keys in `CYCLIC_PERIODS` become their sine and
    cosine, a timestamp (epoch seconds or ISO 8601) becomes hour and weekday, and the
    identifying keys in `DROPPED_KEYS` are left out.

    >>> feature_tokens({"segment": "teen scifi", "hour": 6, "tags": ["dark", "face"]})
    ['segment=teen_scifi', 'hour_sin:1', 'hour_cos:0', 'tags=dark', 'tags=face']
    """
    tokens: list[str] = []
    for key in sorted(features):
        value = features[key]
        if value.__class__ in _CACHED_TYPES and key not in TIMESTAMP_KEYS:
            # Keyed by type too: True == 1, but `flag=true` is not `flag:1`.
            pair = (key, value.__class__, value)
            known = _pairs.get(pair)
            if known is None:
                if len(_pairs) >= _PAIRS_LIMIT:
                    _pairs.clear()
                known = _pairs[pair] = tuple(_pair_tokens(key, value))
            tokens.extend(known)
        else:
            tokens.extend(_pair_tokens(key, value))
    return tokens


# Tokens of a (key, value) pair of these types, remembered: a request's context and a
# learning pass's thousands of contexts are combinations of a few such pairs (segment,
# device, hour...), each otherwise worked out anew. Floats and timestamps, mostly distinct,
# are not remembered.
_CACHED_TYPES = frozenset({str, bool, int})
_PAIRS_LIMIT = 10_000  # a few MB at most, however long the strings
_pairs: dict[tuple[Any, type, Any], tuple[str, ...]] = {}


def _pair_tokens(key: Any, value: Any) -> list[str]:
    name = _token(str(key))
    if value is None or str(key) in DROPPED_KEYS:
        return []
    if str(key) in TIMESTAMP_KEYS:
        moment = _moment(value)
        if moment is None:
            return []
        return [
            *_cyclic(f"{name}_hour", moment.hour + moment.minute / 60, 24.0),
            *_cyclic(f"{name}_weekday", moment.weekday(), 7.0),
        ]
    if isinstance(value, bool):
        return [f"{name}={'true' if value else 'false'}"]
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float: JSON integers have no limit
            return []
        if not math.isfinite(number):
            return []
        period = CYCLIC_PERIODS.get(str(key))
        if period is not None:
            return _cyclic(name, number, period)
        if -1.0 <= number <= 1.0:
            return [f"{name}:{_number(number)}"]
        return [f"{name}={_bucket(number)}"]
    if isinstance(value, list | tuple):
        return [f"{name}={_token(str(item))}" for item in value if item is not None]
    return [f"{name}={_token(str(value))}"]


def context_text(context: Mapping[str, Any]) -> str:
    """The context namespace's tokens; a page of titles computes them once."""
    return " ".join(feature_tokens(context))


def shared_line(
    context: Mapping[str, Any],
    slot_features: Mapping[str, Any],
    text: str | None = None,
) -> str:
    """The shared line as the learner lays it out: the context and the slot's features.
    `text` is `context_text(context)` when the caller already has it."""
    text = context_text(context) if text is None else text
    return f"shared |{CONTEXT_NS} {text} |{SLOT_NS} {context_text(slot_features)}"


def serving_shared_line(text: str) -> str:
    """The shared line of an example as serving lays it out: the context alone, `text`
    being `context_text(context)` (see `serving_action_line`)."""
    return f"shared |{CONTEXT_NS} {text}"


def serving_action_line(candidate: Candidate, slot_text: str) -> str:
    """A candidate's line as serving lays it out, with its slot's tokens (`context_text` of
    the slot's features) on it rather than on the shared line.

    VW adds the shared line's namespaces to every action line before it scores or learns
    one, so this layout and `example_lines`' give the same features and the same scores
    (to float rounding: tests/bandit/test_policy.py). Serving uses this one because a
    page's titles then share one shared line, parsed once per context, and each
    (title, variant) line recurs across every viewer; with the slot on the shared line, a
    page parsed a new shared line per title whenever the context was not cached."""
    return f"{candidate.line} |{SLOT_NS} {slot_text}"


def action_line(candidate: Candidate, label: str = "") -> str:
    return f"{label} {candidate.line}" if label else candidate.line


def example_lines(
    context: Mapping[str, Any],
    slot_features: Mapping[str, Any],
    candidates: Sequence[Candidate],
    label: tuple[int, float, float] | None = None,
    context_tokens: str | None = None,
) -> list[str]:
    """The multi-line ADF example; `label` is (chosen index, cost, probability) when learning;
    `context_tokens` is `context_text(context)` when the caller already has it."""
    lines = [shared_line(context, slot_features, context_tokens)]
    for index, candidate in enumerate(candidates):
        text = ""
        if label is not None and label[0] == index:
            # In ADF the leading action number is ignored; the line's position is the action.
            text = f"0:{_number(label[1])}:{label[2]!r}"
        lines.append(action_line(candidate, text))
    return lines

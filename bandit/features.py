"""Featurisation: turn a context, a slot and candidate actions into VW text-format lines.

Namespaces (VW keys a namespace by its first character, so these letters are the names):
    u  the viewer's context (segment, country, device, hour...)
    t  the slot being decided (for keyart, the title and its genres)
    a  the candidate action (its id, tags and numeric features)
The default arguments interact u×a and t×a, so the model learns which kind of action each
kind of viewer, and each kind of slot, responds to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

CONTEXT_NS = "u"
SLOT_NS = "t"
ACTION_NS = "a"

# Cyclic context values become a point on a circle, so 23h and 0h are neighbours.
CYCLIC_PERIODS = {"hour": 24.0, "weekday": 7.0}

_UNSAFE = re.compile(r"[\s|:]+")


@dataclass(frozen=True)
class Candidate:
    """One action the policy may choose: an opaque id and its features."""

    id: str
    features: Mapping[str, Any] = field(default_factory=dict)


def _token(text: str) -> str:
    # Spaces, pipes and colons are VW syntax; anything else may stand in a feature name.
    return _UNSAFE.sub("_", text.strip()) or "_"


def _number(value: float) -> str:
    # Round float dust (cos 90° = 6e-17) to zero: VW's normalized updates scale by the
    # largest value a feature has shown, and a 1e-17 one makes later updates explode.
    return f"{0.0 if abs(value) < 1e-9 else value:.6g}"


def feature_tokens(features: Mapping[str, Any]) -> list[str]:
    """VW tokens for a feature mapping.

    Strings and booleans are categorical (`key=value`), lists are sets of categories,
    finite numbers are weighted features (`key:value`), and the cyclic keys in
    `CYCLIC_PERIODS` become their sine and cosine.

    >>> feature_tokens({"segment": "teen scifi", "hour": 6, "tags": ["dark", "face"]})
    ['segment=teen_scifi', 'hour_sin:1', 'hour_cos:0', 'tags=dark', 'tags=face']
    """
    tokens: list[str] = []
    for key in sorted(features):
        value = features[key]
        name = _token(str(key))
        if value is None:
            continue
        if isinstance(value, bool):
            tokens.append(f"{name}={'true' if value else 'false'}")
        elif isinstance(value, int | float):
            number = float(value)
            if not math.isfinite(number):
                continue
            period = CYCLIC_PERIODS.get(str(key))
            if period is not None:
                angle = 2 * math.pi * (number % period) / period
                tokens.append(f"{name}_sin:{_number(math.sin(angle))}")
                tokens.append(f"{name}_cos:{_number(math.cos(angle))}")
            else:
                tokens.append(f"{name}:{_number(number)}")
        elif isinstance(value, list | tuple):
            tokens.extend(f"{name}={_token(str(item))}" for item in value if item is not None)
        else:
            tokens.append(f"{name}={_token(str(value))}")
    return tokens


def shared_line(context: Mapping[str, Any], slot_features: Mapping[str, Any]) -> str:
    return (
        f"shared |{CONTEXT_NS} {' '.join(feature_tokens(context))}"
        f" |{SLOT_NS} {' '.join(feature_tokens(slot_features))}"
    )


def action_line(candidate: Candidate, label: str = "") -> str:
    tokens = [f"id={_token(candidate.id)}", *feature_tokens(candidate.features)]
    prefix = f"{label} " if label else ""
    return f"{prefix}|{ACTION_NS} {' '.join(tokens)}"


def example_lines(
    context: Mapping[str, Any],
    slot_features: Mapping[str, Any],
    candidates: Sequence[Candidate],
    label: tuple[int, float, float] | None = None,
) -> list[str]:
    """The multi-line ADF example; `label` is (chosen index, cost, probability) when learning."""
    lines = [shared_line(context, slot_features)]
    for index, candidate in enumerate(candidates):
        text = ""
        if label is not None and label[0] == index:
            # In ADF the leading action number is ignored; the line's position is the action.
            text = f"0:{_number(label[1])}:{label[2]!r}"
        lines.append(action_line(candidate, text))
    return lines

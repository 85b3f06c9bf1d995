"""Request bodies of the Personalizer-compatible API (REST API 2022-09-01-preview), with the
limits Personalizer documented. Unknown fields are ignored, as Personalizer ignored them:
clients send back what they read (a service configuration's read-only fields, say)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StringConstraints,
    field_validator,
)

from web.schemas import storable

MAX_ACTIONS = 50
MAX_SLOTS = 50
# Flattened features per context, action or slot, and how deep feature objects may nest.
MAX_FEATURES = 500
MAX_DEPTH = 8


def _no_controls(value: str) -> str:
    # Event ids travel in URL paths, and a multi-slot decision's joins its slot id with a
    # control character (bandit.personalizer.SEPARATOR): none may hold one.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain control characters")
    return value


def _text(max_length: int) -> Any:
    return Annotated[
        str,
        StringConstraints(min_length=1, max_length=max_length),
        AfterValidator(storable),
        AfterValidator(_no_controls),
    ]


EventId = _text(256)
ActionId = _text(256)
SlotId = _text(128)
Name = _text(256)


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


def flatten_features(groups: list[dict[str, Any]] | None, where: str) -> dict[str, Any]:
    """Personalizer's list of feature objects as one flat mapping, nested keys joined by
    dots: `[{"user": {"tier": "gold"}}, {"device": "tv"}]` → `{"user.tier": "gold",
    "device": "tv"}`. Lists of values stay lists (a set of categories); a list of objects
    merges them. Raises ValueError naming `where` on anything keyart cannot featurise."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ValueError(f"{where}: features nest deeper than {MAX_DEPTH} levels")
        if value is None:
            return
        if isinstance(value, dict):
            for key, inner in value.items():
                storable(key)
                walk(f"{prefix}.{key}" if prefix else key, inner, depth + 1)
            return
        if isinstance(value, list):
            if all(isinstance(v, dict) for v in value):
                for inner in value:
                    walk(prefix, inner, depth + 1)
                return
            if any(isinstance(v, dict | list) for v in value):
                raise ValueError(f"{where}: feature {prefix!r} mixes objects and values")
            out[prefix] = [_scalar(prefix, v) for v in value if v is not None]
        else:
            out[prefix] = _scalar(prefix, value)
        if len(prefix) > 256:
            raise ValueError(f"{where}: a feature name is longer than 256 characters")
        if len(out) > MAX_FEATURES:
            raise ValueError(f"{where}: more than {MAX_FEATURES} features")

    def _scalar(name: str, value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > 1000:
                raise ValueError(f"{where}: feature {name!r} is longer than 1000 characters")
            return storable(value)
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            try:
                finite = math.isfinite(value)
            except OverflowError:
                finite = False
            if not finite:
                raise ValueError(f"{where}: feature {name!r} must be a finite number")
            return value
        raise ValueError(f"{where}: feature {name!r} has a value of an unknown type")

    for group in groups or []:
        walk("", group, 0)
    return out


class Action(Body):
    id: ActionId
    features: list[dict[str, Any]] | None = None


class RankRequest(Body):
    contextFeatures: list[dict[str, Any]] | None = None
    actions: list[Action] = Field(min_length=1, max_length=MAX_ACTIONS)
    excludedActions: list[ActionId] | None = Field(None, max_length=MAX_ACTIONS)
    eventId: EventId | None = None
    deferActivation: bool | None = None

    @field_validator("actions")
    @classmethod
    def _unique(cls, actions: list[Action]) -> list[Action]:
        ids = [a.id for a in actions]
        if len(set(ids)) != len(ids):
            raise ValueError("action ids must be unique")
        return actions


class Slot(Body):
    id: SlotId
    baselineAction: ActionId
    features: list[dict[str, Any]] | None = None
    excludedActions: list[ActionId] | None = Field(None, max_length=MAX_ACTIONS)


class MultiSlotRankRequest(RankRequest):
    slots: list[Slot] = Field(min_length=1, max_length=MAX_SLOTS)


Reward = Annotated[FiniteFloat, Field(ge=-1.0, le=1.0)]


class RewardRequest(Body):
    value: Reward


class SlotReward(Body):
    slotId: SlotId
    value: Reward


class MultiSlotRewardRequest(Body):
    reward: list[SlotReward] = Field(min_length=1, max_length=MAX_SLOTS)


LEARNING_MODES = ("Online", "Apprentice", "LoggingOnly")


class ServiceConfiguration(Body):
    rewardWaitTime: timedelta
    defaultReward: Reward
    rewardAggregation: Literal["earliest", "sum"]
    explorationPercentage: Annotated[FiniteFloat, Field(ge=0.0, le=1.0)]
    modelExportFrequency: timedelta
    logRetentionDays: int = Field(ge=-1, le=100_000)
    modelRetrainDays: int = Field(ge=0, le=100_000)
    learningMode: Literal["Online", "Apprentice", "LoggingOnly"] = "Online"
    isAutoOptimizationEnabled: bool | None = None
    autoOptimizationFrequency: timedelta | None = None
    autoOptimizationStartDate: datetime | None = None

    @field_validator("rewardWaitTime", "modelExportFrequency", "autoOptimizationFrequency")
    @classmethod
    def _positive(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(0) < value <= timedelta(days=365):
            raise ValueError("must be a positive duration of at most a year")
        return value


class PolicySettings(Body):
    name: Name
    arguments: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class EvaluationRequest(Body):
    name: Name
    startTime: datetime
    endTime: datetime
    enablePolicyOptimization: bool | None = None
    policies: list[PolicySettings] | None = Field(None, max_length=10)


class ApplyFromEvaluation(Body):
    evaluationId: Name
    policyName: Name

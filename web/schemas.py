"""Request schemas. The same models validate requests and generate the OpenAPI document."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from web.errors import ApiError

Id = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\s/]+$")]
ShortText = Annotated[str, StringConstraints(max_length=200)]
ContextValue = (
    bool | int | float | Annotated[str, StringConstraints(max_length=200)] | list[ShortText]
)
Format = Literal["avif", "webp", "jpg"]


class Strict(BaseModel):
    # Unknown fields are refused: a misspelt field silently ignored is a bug report later.
    model_config = ConfigDict(extra="forbid")


def _check_context(context: dict[str, Any]) -> dict[str, Any]:
    if len(context) > 50:
        raise ValueError("at most 50 context fields")
    for key, value in context.items():
        if not key or len(key) > 64:
            raise ValueError("context keys must be 1 to 64 characters")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"context field {key!r} must be a finite number")
        if isinstance(value, list) and len(value) > 50:
            raise ValueError(f"context field {key!r} has more than 50 items")
    return context


class DecisionsRequest(Strict):
    user: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="Opaque viewer key; the same key gets stable choices."
    )
    context: dict[str, ContextValue] = Field(default_factory=dict)
    titles: list[Id] = Field(min_length=1, max_length=200)
    rendition: Annotated[str, StringConstraints(max_length=64)] | None = None
    format: Format | None = None
    defer_activation: bool = False

    _context = field_validator("context")(_check_context)


class EventIn(Strict):
    event_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    type: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    value: float = 1.0

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("value must be a finite number")
        return value


class EventsRequest(Strict):
    # Items are checked one by one, so one bad event is reported `invalid` alone.
    events: list[dict[str, Any]] = Field(min_length=1, max_length=1000)


class TitleCreate(Strict):
    id: Id
    name: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    genres: list[ShortText] = Field(default_factory=list, max_length=20)


class ArtworkPatch(Strict):
    status: Literal["active", "paused", "archived"] | None = None
    label: ShortText | None = None
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=50)]] | None = Field(
        None, max_length=30
    )


class DefaultArtwork(Strict):
    artwork_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]


M = TypeVar("M", bound=BaseModel)


def json_body(model: type[M]) -> M:
    """Parse and validate the request's JSON body, or answer 400/422 naming what is wrong."""
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", "the request body must be a JSON object")
    return model.model_validate(data)


SCHEMAS: tuple[type[BaseModel], ...] = (
    DecisionsRequest,
    EventIn,
    EventsRequest,
    TitleCreate,
    ArtworkPatch,
    DefaultArtwork,
)

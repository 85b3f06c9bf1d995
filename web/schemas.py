"""Request schemas. The same models validate requests and generate the OpenAPI document."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, TypeVar

from flask import request
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
)

from web.errors import ApiError


def storable(value: str) -> str:
    """Refuse text the database cannot store: PostgreSQL's text types reject NUL, and an
    unpaired surrogate (JSON allows `"\\ud800"`) is not UTF-8 at all, so VW, the log's DSJSON
    and any export would fail on it later, far from the request that sent it."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (it has an unpaired surrogate)") from None
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _id_text(value: str) -> str:
    # An id travels in URL paths: control characters, and the segments "." and "..", which
    # clients and proxies rewrite, would make a title or artwork unreachable.
    if _CONTROL.search(value) or value in (".", ".."):
        raise ValueError("must not be '.' or '..' or contain control characters")
    return value


def text(min_length: int = 0, max_length: int = 200, pattern: str | None = None) -> Any:
    """A string type for request fields: its length (and pattern) as the OpenAPI document
    states them, then `storable`."""
    constraints = StringConstraints(min_length=min_length, max_length=max_length, pattern=pattern)
    return Annotated[str, constraints, AfterValidator(storable)]


Id = Annotated[text(1, 200, r"^[^\s/]+$"), AfterValidator(_id_text)]
ShortText = text()
ContextValue = bool | int | float | ShortText | list[ShortText]
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
        try:
            storable(key)
        except ValueError as error:
            raise ValueError(f"context keys {error}") from None
        # An int too large for a float (JSON has no limit) could not be featurised.
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                finite = math.isfinite(value)
            except OverflowError:
                finite = False
            if not finite:
                raise ValueError(f"context field {key!r} must be a finite number")
        if isinstance(value, list) and len(value) > 50:
            raise ValueError(f"context field {key!r} has more than 50 items")
    return context


class DecisionsRequest(Strict):
    user: text(1, 200) | None = Field(
        None, description="Opaque viewer key; the same key gets stable choices."
    )
    context: dict[str, ContextValue] = Field(default_factory=dict)
    titles: list[Id] = Field(min_length=1, max_length=200)
    rendition: text(0, 64) | None = None
    format: Format | None = None
    # Strict: "yes" or 1 for a flag that decides whether learning happens is a client bug.
    defer_activation: StrictBool = False

    _context = field_validator("context")(_check_context)


class EventIn(Strict):
    event_id: text(1, 64)
    type: text(1, 32)
    # A number, not its text or a bool; never negative, which would cancel other events out.
    value: Annotated[float, Field(strict=True, ge=0)] = 1.0

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
    name: text(1, 500)
    genres: list[ShortText] = Field(default_factory=list, max_length=20)


class Focus(Strict):
    """A focal point, as fractions of the picture's width and height from its top left."""

    x: float = Field(ge=0, le=1, allow_inf_nan=False)
    y: float = Field(ge=0, le=1, allow_inf_nan=False)


class ArtworkPatch(Strict):
    status: Literal["active", "paused", "archived"] | None = None
    label: ShortText | None = None
    tags: list[text(1, 50)] | None = Field(None, max_length=30)
    # Extension: re-centres the crops and cuts the renditions again.
    focus: Focus | None = None


class EditorCreate(Strict):
    email: text(3, 320)
    password: text(8, 200) | None = None
    admin: StrictBool = False


class DefaultArtwork(Strict):
    artwork_id: text(1, 64)


class PolicySettings(Strict):
    """Learning settings to store (`PUT /api/v1/policy`): each stands in for its
    environment variable (`web.config.POLICY_FIELDS`); one left out is the environment's."""

    vw_args: text(1, 500) | None = None
    interactions: text(0, 200) | None = None
    hash_bits: StrictInt | None = None
    reward_values: dict[text(1, 32), float] | None = Field(None, max_length=20)
    reward_aggregation: text(1, 16) | None = None


M = TypeVar("M", bound=BaseModel)


def json_body(model: type[M]) -> M:
    """Parse and validate the request's JSON body, or answer 400/422 naming what is wrong."""
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        # Python's parser recurses per nesting level; `silent` only covers malformed text.
        raise ApiError(400, "invalid_json", "the request body is nested too deeply") from None
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
    EditorCreate,
    DefaultArtwork,
    PolicySettings,
)

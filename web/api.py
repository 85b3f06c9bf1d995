"""The public decision API, for UIs: which artwork to show, and what came of it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import ValidationError

from bandit.rewards import Event, record_events
from web import metrics
from web.errors import ApiError, describe_validation
from web.personalize import DEFAULT_RENDITION, PageRequest, choose_artwork
from web.schemas import DecisionsRequest, EventIn, EventsRequest, json_body
from web.state import db, runtime

bp = Blueprint("api", __name__, url_prefix="/api/v1")

_MEDIA_FORMATS = {"image/avif": "avif", "image/webp": "webp", "image/jpeg": "jpg"}


def _negotiate(explicit: str | None) -> tuple[str, bool]:
    """The image format to answer with, and whether it came from the Accept header."""
    if explicit:
        return explicit, False
    # The most specific, highest-quality match wins (an explicit image/webp beats */*);
    # among equals the smaller format, in _MEDIA_FORMATS order.
    best = request.accept_mimetypes.best_match(list(_MEDIA_FORMATS))
    return _MEDIA_FORMATS.get(best or "", "jpg"), True


def _check_rendition(name: str | None) -> str:
    configured = runtime().settings.presets
    presets = {p.name for p in configured}
    # Operators may configure presets without the usual default: then their first one is.
    name = name or (DEFAULT_RENDITION if DEFAULT_RENDITION in presets else configured[0].name)
    if name not in presets:
        raise ApiError(
            422,
            "unknown_rendition",
            f"rendition {name!r} is not a preset; choose one of {', '.join(sorted(presets))}",
        )
    return name


def _decide(body: DecisionsRequest) -> tuple[list[dict[str, Any]], bool, bool]:
    """The page's answers, whether its format was negotiated, and whether it fell back."""
    fmt, negotiated = _negotiate(body.format)
    page = PageRequest(
        titles=body.titles,
        context=body.context,
        user=body.user,
        rendition=_check_rendition(body.rendition),
        format=fmt,
        deferred=body.defer_activation,
    )
    decided = choose_artwork(runtime(), page)
    # One increment per outcome, not per title: each is a locked write to a shared file.
    outcomes = Counter(d["error"]["code"] if "error" in d else "ok" for d in decided)
    for outcome, count in outcomes.items():
        metrics.DECISIONS.labels(outcome).inc(count)
    modes = Counter(d["mode"] for d in decided if "mode" in d)
    for mode, count in modes.items():
        metrics.DECISION_MODES.labels(mode).inc(count)
    if modes["fallback"]:
        metrics.FALLBACK_ANSWERS.inc(modes["fallback"])
    return decided, negotiated, modes["fallback"] > 0


def _vary(response: Response, negotiated: bool, fallback: bool) -> Response:
    if negotiated:
        response.vary.add("Accept")
    response.headers["Cache-Control"] = "no-store"
    if fallback:
        response.headers["Keyart-Fallback"] = "1"
    return response


def _answer(value: Any) -> Response:
    """`jsonify` for the decision routes, by orjson: a page's answer is 40 objects, and the
    standard library's encoder was a tenth of a page's time in the worker. The same JSON
    (keys in order, floats as their shortest repr), without `jsonify`'s spaces."""
    return current_app.response_class(
        orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE), mimetype="application/json"
    )


@bp.post("/decisions")
def decisions() -> Response:
    decided, negotiated, fallback = _decide(json_body(DecisionsRequest))
    return _vary(_answer({"decisions": decided}), negotiated, fallback)


_RESERVED = {"user", "rendition", "format", "defer_activation"}
_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _scalar(raw: str) -> str | int | float:
    """Query values are text; numbers among them are numbers, as they would be in JSON."""
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    return raw


@bp.get("/titles/<title_id>/artwork", endpoint="one_title")
def one_title(title_id: str) -> tuple[Response, int]:
    """The same decision for one title, its context taken from the query string."""
    args = request.args
    for key, values in args.lists():
        if len(values) > 1:
            raise ApiError(422, "invalid_request", f"query parameter {key!r} is given twice")
    context = {k: _scalar(v) for k, v in args.items() if k not in _RESERVED}
    defer = args.get("defer_activation", "false").lower()
    if defer not in _FLAGS:
        raise ApiError(
            422, "invalid_request", "defer_activation: one of true, false, 1, 0, yes, no"
        )
    try:
        body = DecisionsRequest.model_validate(
            {
                "titles": [title_id],
                "context": context,
                "user": args.get("user"),
                "rendition": args.get("rendition"),
                "format": args.get("format"),
                "defer_activation": _FLAGS[defer],
            }
        )
    except ValidationError as error:
        raise ApiError(422, "invalid_request", describe_validation(error)) from None
    decided, negotiated, fallback = _decide(body)
    (decision,) = decided
    status = 200
    if "error" in decision:
        status = 404 if decision["error"]["code"] == "unknown_title" else 409
        return _vary(_answer({"error": decision["error"]}), negotiated, fallback), status
    return _vary(_answer(decision), negotiated, fallback), status


@bp.post("/events")
def events() -> tuple[Response, int]:
    body = json_body(EventsRequest)
    settings = runtime().settings
    parsed: list[Event | None] = []
    problems: dict[int, str] = {}
    for index, raw in enumerate(body.events):
        try:
            item = EventIn.model_validate(raw)
        except ValidationError as error:
            parsed.append(None)
            problems[index] = describe_validation(error)
            continue
        if item.type not in settings.reward_values:
            parsed.append(None)
            problems[index] = f"type must be one of {', '.join(sorted(settings.reward_values))}"
            continue
        parsed.append(Event(item.event_id, item.type, item.value))
    valid = [event for event in parsed if event is not None]
    session = db()
    statuses = iter(
        record_events(
            session,
            valid,
            reward_wait=settings.reward_wait,
            known_types=list(settings.reward_values),
        )
    )
    session.commit()
    results = []
    for index, (raw, event) in enumerate(zip(body.events, parsed, strict=True)):
        if event is None:
            results.append(
                {
                    "event_id": raw.get("event_id"),
                    "type": raw.get("type"),
                    "status": "invalid",
                    "message": problems[index],
                }
            )
        else:
            results.append(
                {"event_id": event.event_id, "type": event.type, "status": next(statuses)}
            )
    for result in results:
        metrics.EVENTS.labels(result["status"]).inc()
    return jsonify({"events": results}), 202

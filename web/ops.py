"""Operations: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from werkzeug.routing import Map

from web import metrics
from web.schemas import SCHEMAS
from web.state import db, runtime

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    # `fallback`: whether this process is answering decisions from its catalog snapshot
    # (`web.personalize`), ready or not.
    fallback = runtime().fallback.describe()
    try:
        db().execute(text("SELECT 1"))
    except Exception as error:
        return _not_ready(
            "database_unreachable", f"database not reachable: {type(error).__name__}", fallback
        )
    policy = runtime().policy
    if not policy.loaded:
        return _not_ready(
            "policy_not_loaded", "the policy snapshot has not been read yet", fallback
        )
    return jsonify(
        {"status": "ready", "policy_version": policy.current.version, "fallback": fallback}
    )


def _not_ready(code: str, message: str, fallback: dict[str, Any]) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}, "fallback": fallback}), 503


def learner_status() -> tuple[float, dict[str, Any] | None]:
    """The learner's lag behind the log, and who leads (None: no learner leads)."""
    from bandit.leadership import current_leader, learner_lag_seconds

    rt = runtime()
    with rt.sessions() as session:
        lag = learner_lag_seconds(session, rt.rewards)
        leader = current_leader(session)
    return lag, leader.to_json() if leader is not None else None


@bp.get("/metrics")
def prometheus() -> Response:
    metrics.observe_serving_policy(runtime().policy)
    body = metrics.render(metrics.LearnerCollector(learner_status))
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _body(name: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


def _json(description: str, schema: str | dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {}
    if schema is not None:
        content = (
            {"schema": {"$ref": f"#/components/schemas/{schema}"}}
            if isinstance(schema, str)
            else {"schema": schema}
        )
    return {"description": description, "content": {"application/json": content}}


EDITOR = [{"bearer": []}]
_ANY: dict[str, Any] = {}
# Sent, as "1", when the answer came from the catalog snapshot (the database was out).
_FALLBACK_HEADER = {
    "description": "1: fallback answers from the last catalog snapshot; nothing was logged",
    "schema": {"type": "string", "enum": ["1"]},
}
_NULLABLE_STRING = {"type": ["string", "null"]}

# Answers' shapes (requests' come from web.schemas). Loose where a field is open-ended
# (features, reports), exact where a client relies on it.
RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "ErrorDetail": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
    },
    "Decision": {
        "type": "object",
        "required": ["title"],
        "properties": {
            "title": {"type": "string"},
            "event_id": _NULLABLE_STRING,
            "artwork_id": {"type": "string"},
            "image": {
                "type": ["object", "null"],
                "properties": {
                    "url": {"type": "string"},
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                    "format": {"enum": ["avif", "webp", "jpg"]},
                },
            },
            "placeholder": {"type": ["object", "null"]},
            # Null in a fallback answer (`mode` "fallback"): nothing was logged.
            "probability": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "policy_version": {"type": ["integer", "null"]},
            "mode": {"enum": ["policy", "apprentice", "single", "fallback"]},
            "error": {"$ref": "#/components/schemas/ErrorDetail"},
        },
    },
    "Decisions": {
        "type": "object",
        "required": ["decisions"],
        "properties": {
            "decisions": {"type": "array", "items": {"$ref": "#/components/schemas/Decision"}}
        },
    },
    "EventStatuses": {
        "type": "object",
        "required": ["events"],
        "properties": {
            "events": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {
                            "enum": [
                                "accepted",
                                "duplicate",
                                "unknown_event",
                                "too_late",
                                "invalid",
                            ]
                        },
                        "message": {"type": "string"},
                    },
                },
            }
        },
    },
    "Artwork": {
        "type": "object",
        "required": ["id", "title", "status", "renditions"],
        "properties": {
            "id": {"type": "string"},
            "title": {"type": "string"},
            "status": {"enum": ["active", "paused", "archived"]},
            "label": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "renditions": {"type": "array", "items": {"type": "object"}},
        },
    },
    "Title": {
        "type": "object",
        "required": ["id", "name", "genres", "default_artwork_id"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "genres": {"type": "array", "items": {"type": "string"}},
            "default_artwork_id": _NULLABLE_STRING,
            "artworks": {"type": "array", "items": {"$ref": "#/components/schemas/Artwork"}},
        },
    },
    "Titles": {
        "type": "object",
        "required": ["titles"],
        "properties": {
            "titles": {"type": "array", "items": {"$ref": "#/components/schemas/Title"}}
        },
    },
    "Policy": {
        "type": "object",
        "required": ["version", "serving_version", "examples_learned", "vw_args", "leader"],
        "properties": {
            "version": {"type": "integer"},
            "serving_version": {"type": "integer"},
            "examples_learned": {"type": "integer"},
            "vw_args": {"type": "string"},
            "learner_lag_seconds": {"type": "number", "minimum": 0},
            "leader": {
                "type": ["object", "null"],
                "properties": {
                    "host": {"type": "string"},
                    "pid": {"type": "integer"},
                    "since": _NULLABLE_STRING,
                },
            },
        },
    },
    "Report": {
        "type": "object",
        "required": ["title", "rows"],
        "properties": {
            "title": {"type": "string"},
            "default_artwork_id": _NULLABLE_STRING,
            "policy_version": {"type": "integer"},
            "rows": {"type": "array", "items": {"type": "object"}},
        },
    },
}

_UPLOAD_FORM = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "label": {"type": "string"},
                    "tags": {"type": "string", "description": "comma-separated"},
                    "focus_x": {"type": "number"},
                    "focus_y": {"type": "number"},
                },
            }
        }
    },
}

# One operation per endpoint (by Flask endpoint name). The document's paths, methods and
# path parameters are the app's own routes (`openapi_document`), so they cannot drift
# from them; a route with no entry here (or in UNDOCUMENTED) fails the contract test.
OPERATIONS: dict[str, dict[str, Any]] = {
    "api.decisions": {
        "summary": "Choose artwork for a page of titles",
        "requestBody": _body("DecisionsRequest"),
        "responses": {
            "200": {
                **_json("One decision per title", "Decisions"),
                "headers": {"Keyart-Fallback": _FALLBACK_HEADER},
            }
        },
    },
    "api.one_title": {
        "summary": "Choose artwork for one title; context from the query",
        "parameters": [
            {"name": name, "in": "query", "schema": schema}
            for name, schema in (
                ("user", {"type": "string"}),
                ("rendition", {"type": "string"}),
                ("format", {"enum": ["avif", "webp", "jpg"]}),
                ("defer_activation", {"enum": ["true", "false", "1", "0", "yes", "no"]}),
                ("segment", {"type": "string"}),
                ("device", {"type": "string"}),
            )
        ],
        "responses": {
            "200": {
                **_json("A decision", "Decision"),
                "headers": {"Keyart-Fallback": _FALLBACK_HEADER},
            }
        },
    },
    "api.events": {
        "summary": "Report impressions, clicks and plays",
        "requestBody": _body("EventsRequest"),
        "responses": {"202": _json("One status per event", "EventStatuses")},
    },
    "editor.list_titles": {
        "summary": "List titles",
        "security": EDITOR,
        "responses": {"200": _json("Titles", "Titles")},
    },
    "editor.create_title": {
        "summary": "Create a title",
        "security": EDITOR,
        "requestBody": _body("TitleCreate"),
        "responses": {"201": _json("The title", "Title")},
    },
    "editor.get_title": {
        "summary": "A title with its artwork",
        "security": EDITOR,
        "responses": {"200": _json("The title", "Title")},
    },
    "editor.upload_artwork": {
        "summary": "Upload an artwork variant",
        "security": EDITOR,
        "requestBody": _UPLOAD_FORM,
        "responses": {"201": _json("The variant", "Artwork")},
    },
    "editor.patch_artwork": {
        "summary": "Change status, label or tags",
        "security": EDITOR,
        "requestBody": _body("ArtworkPatch"),
        "responses": {"200": _json("The variant", "Artwork")},
    },
    "editor.put_default_artwork": {
        "summary": "Set the fallback artwork",
        "security": EDITOR,
        "requestBody": _body("DefaultArtwork"),
        "responses": {"200": _json("The title", "Title")},
    },
    "editor.title_serving": {
        "summary": "Apprentice or policy for this title, and why",
        "security": EDITOR,
        "responses": {"200": _json("Serving mode", {"type": "object", "required": ["title"]})},
    },
    "editor.report": {
        "summary": "Per variant and segment: shown, clicked, played, and the policy's share",
        "security": EDITOR,
        "responses": {"200": _json("The report", "Report")},
    },
    "editor.policy": {
        "summary": "The current policy snapshot, the learner's lag and the leading learner",
        "security": EDITOR,
        "responses": {"200": _json("Snapshot", "Policy")},
    },
    "editor.put_policy": {
        "summary": "Store learning settings (they win over the environment's; {} clears them)",
        "security": EDITOR,
        "requestBody": _body("PolicySettings"),
        "responses": {"200": _json("The policy, as GET answers it", "Policy")},
    },
    "editor.results": {
        "summary": "The report with weighted rates, verdicts per segment and a timeline",
        "security": EDITOR,
        "responses": {"200": _json("Results", {"type": "object", "required": ["title"]})},
    },
    "editor.list_editors_route": {
        "summary": "Every editor (admin editors only)",
        "security": EDITOR,
        "responses": {"200": _json("Editors", {"type": "object"})},
    },
    "editor.create_editor_route": {
        "summary": "Create an editor (admin editors only); answers its API token once",
        "security": EDITOR,
        "requestBody": _body("EditorCreate"),
        "responses": {"201": _json("The editor and its token", {"type": "object"})},
    },
    "editor.issue_token_route": {
        "summary": "Issue a new API token, revoking the old (admin editors only)",
        "security": EDITOR,
        "responses": {"201": _json("The token", {"type": "object"})},
    },
    "editor.revoke_token_route": {
        "summary": "Revoke the editor's API token (admin editors only)",
        "security": EDITOR,
        "responses": {"204": {"description": "Revoked"}},
    },
    "editor.latest_evaluations": {
        "summary": "The newest offline evaluation of the catalog and of one title",
        "security": EDITOR,
        "parameters": [
            {"name": "title", "in": "query", "schema": {"type": "string"}},
            {"name": "segment", "in": "query", "schema": {"type": "string"}},
        ],
        "responses": {"200": _json("Evaluations (null where none was run)", {"type": "object"})},
    },
    "media.media": {
        "summary": "Rendition bytes (immutable), or a redirect to KEYART_MEDIA_PUBLIC_URL",
        "responses": {
            "200": {
                "description": "Image",
                "content": {f"image/{kind}": _ANY for kind in ("avif", "webp", "jpeg", "png")},
            },
            "302": {"description": "At KEYART_MEDIA_PUBLIC_URL"},
            "304": {"description": "Not modified"},
        },
    },
    "ops.healthz": {"summary": "Process up", "responses": {"200": _json("ok")}},
    "ops.readyz": {
        "summary": "Database reachable, policy loaded; `fallback` says whether this process"
        " is answering decisions from its catalog snapshot",
        "responses": {"200": _json("ready")},
    },
    "ops.prometheus": {
        "summary": "Prometheus metrics",
        "responses": {"200": {"description": "text", "content": {"text/plain": _ANY}}},
    },
    "ops.openapi": {
        "summary": "This document",
        "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
    },
}
# Routes that are not part of this document: static files, the studio's HTML pages, and the
# Personalizer-compatible API, whose contract is Azure's own (REST API 2022-09-01-preview,
# driven by its official SDK in tests/web/test_personalizer.py).
UNDOCUMENTED_BLUEPRINTS = frozenset({"studio", "personalizer"})
UNDOCUMENTED = frozenset({"static"})
# Any status an operation does not list answers the error object (400, 401, 403, 404,
# 405, 409, 413, 415, 422, 503...).
_ERROR = _json("An error; `code` says which", "Error")
_PATH_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def documented(endpoint: str) -> bool:
    return endpoint not in UNDOCUMENTED and endpoint.split(".", 1)[0] not in UNDOCUMENTED_BLUEPRINTS


def openapi_document(url_map: Map) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app's routes in `url_map`: paths, methods and path
    parameters from the routes themselves, request bodies from the models that validate
    them (web.schemas), answers from RESPONSE_SCHEMAS."""
    schemas: dict[str, Any] = {}
    for model in SCHEMAS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas.update(RESPONSE_SCHEMAS)
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(url_map.iter_rules(), key=lambda r: r.rule):
        operation = OPERATIONS.get(rule.endpoint)
        if not documented(rule.endpoint) or operation is None:
            continue
        path = _PATH_ARGUMENT.sub(r"{\1}", rule.rule)
        names = _PATH_ARGUMENT.findall(rule.rule)
        in_path = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in names
        ]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            entry = {**operation, "operationId": rule.endpoint}
            entry["parameters"] = in_path + list(operation.get("parameters", ()))
            entry["responses"] = {**operation["responses"], "default": _ERROR}
            paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "keyart", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document(current_app.url_map))

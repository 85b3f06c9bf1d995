"""Operations: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from web import metrics
from web.errors import ApiError
from web.schemas import SCHEMAS
from web.state import db, runtime

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    try:
        db().execute(text("SELECT 1"))
    except Exception as error:
        raise ApiError(
            503, "database_unreachable", f"database not reachable: {type(error).__name__}"
        ) from None
    policy = runtime().policy
    if not policy.loaded:
        raise ApiError(503, "policy_not_loaded", "the policy snapshot has not been read yet")
    return jsonify({"status": "ready", "policy_version": policy.current.version})


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


def _answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {}}}


ERRORS = {
    "400": _answer("Body is not JSON"),
    "422": _answer("A field is wrong; the message names it"),
}
EDITOR = [{"bearer": []}]


def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in SCHEMAS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    paths = {
        "/api/v1/decisions": {
            "post": {
                "summary": "Choose artwork for a page of titles",
                "requestBody": _body("DecisionsRequest"),
                "responses": {"200": _answer("One decision per title"), **ERRORS},
            }
        },
        "/api/v1/titles/{title}/artwork": {
            "get": {
                "summary": "Choose artwork for one title; context from the query",
                "parameters": [
                    {"name": "title", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _answer("A decision"),
                    "404": _answer("Unknown title"),
                    "409": _answer("No active artwork"),
                },
            }
        },
        "/api/v1/events": {
            "post": {
                "summary": "Report impressions, clicks and plays",
                "requestBody": _body("EventsRequest"),
                "responses": {"202": _answer("One status per event"), **ERRORS},
            }
        },
        "/api/v1/titles": {
            "get": {
                "summary": "List titles",
                "security": EDITOR,
                "responses": {"200": _answer("Titles")},
            },
            "post": {
                "summary": "Create a title",
                "security": EDITOR,
                "requestBody": _body("TitleCreate"),
                "responses": {"201": _answer("The title"), "409": _answer("Exists"), **ERRORS},
            },
        },
        "/api/v1/titles/{title}": {
            "get": {
                "summary": "A title with its artwork",
                "security": EDITOR,
                "responses": {"200": _answer("The title"), "404": _answer("Unknown title")},
            }
        },
        "/api/v1/titles/{title}/artworks": {
            "post": {
                "summary": "Upload an artwork variant",
                "security": EDITOR,
                "requestBody": {
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
                },
                "responses": {
                    "201": _answer("The variant"),
                    "409": _answer("Duplicate"),
                    "413": _answer("Too large"),
                    "415": _answer("Not an accepted image type"),
                    "422": _answer("Undecodable or over the pixel limit"),
                },
            }
        },
        "/api/v1/artworks/{artwork}": {
            "patch": {
                "summary": "Change status, label or tags",
                "security": EDITOR,
                "requestBody": _body("ArtworkPatch"),
                "responses": {"200": _answer("The variant"), **ERRORS},
            }
        },
        "/api/v1/titles/{title}/default-artwork": {
            "put": {
                "summary": "Set the fallback artwork",
                "security": EDITOR,
                "requestBody": _body("DefaultArtwork"),
                "responses": {"200": _answer("The title"), **ERRORS},
            }
        },
        "/api/v1/titles/{title}/serving": {
            "get": {
                "summary": "Apprentice or policy for this title, and why",
                "security": EDITOR,
                "responses": {"200": _answer("Serving mode"), "404": _answer("Unknown title")},
            }
        },
        "/api/v1/policy": {
            "get": {
                "summary": "The current policy snapshot",
                "security": EDITOR,
                "responses": {"200": _answer("Snapshot")},
            }
        },
        "/api/v1/evaluations/latest": {
            "get": {
                "summary": "The newest offline evaluation of the catalog and of one title",
                "security": EDITOR,
                "parameters": [
                    {"name": "title", "in": "query", "schema": {"type": "string"}},
                    {"name": "segment", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _answer("Evaluations (null where none was run)"),
                    "404": _answer("Unknown title"),
                    **ERRORS,
                },
            }
        },
        "/media/{key}": {
            "get": {
                "summary": "Rendition bytes (immutable)",
                "responses": {
                    "200": {"description": "Image"},
                    "304": {"description": "Not modified"},
                },
            }
        },
        "/healthz": {"get": {"summary": "Process up", "responses": {"200": _answer("ok")}}},
        "/readyz": {
            "get": {
                "summary": "Database reachable, policy loaded",
                "responses": {"200": _answer("ready"), "503": _answer("not ready")},
            }
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
        },
    }
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
    return jsonify(openapi_document())

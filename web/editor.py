"""The editor API: titles, artwork uploads, statuses, defaults and reports."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from artwork import catalog
from artwork.catalog import Upload
from artwork.errors import ArtworkError
from artwork.models import Artwork, Title
from bandit.features import Candidate
from bandit.models import PolicySnapshot
from bandit.report import action_report
from bandit.snapshots import latest_version
from web import metrics
from web.auth import editor_required
from web.errors import ApiError
from web.personalize import artwork_features
from web.schemas import ArtworkPatch, DefaultArtwork, TitleCreate, json_body
from web.state import db, runtime

bp = Blueprint("editor", __name__, url_prefix="/api/v1")


def artwork_json(artwork: Artwork) -> dict[str, Any]:
    media = runtime().settings.media_prefix
    return {
        "id": artwork.id,
        "title": artwork.title_id,
        "status": artwork.status,
        "label": artwork.label,
        "tags": artwork.tags,
        "width": artwork.width,
        "height": artwork.height,
        "features": artwork.features,
        "focus": (
            {"x": artwork.focus_x, "y": artwork.focus_y} if artwork.focus_x is not None else None
        ),
        "placeholder": artwork.placeholder,
        "crop": artwork.crop,
        "renditions": [
            {
                "preset": r.preset,
                "format": r.format,
                "width": r.width,
                "height": r.height,
                "bytes": r.size,
                "url": media + r.key,
            }
            for r in artwork.renditions
        ],
        "created_at": artwork.created_at.isoformat() + "Z",
    }


def title_json(title: Title, *, with_artworks: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": title.id,
        "name": title.name,
        "genres": title.genres,
        "default_artwork_id": title.default_artwork_id,
        "artworks_active": sum(1 for a in title.artworks if a.status == "active"),
    }
    if with_artworks:
        out["artworks"] = [artwork_json(a) for a in title.artworks]
    return out


@bp.post("/titles")
@editor_required
def create_title() -> tuple[Response, int]:
    body = json_body(TitleCreate)
    session = db()
    title = catalog.create_title(session, body.id, body.name, body.genres)
    session.commit()
    return jsonify(title_json(title, with_artworks=True)), 201


@bp.get("/titles")
@editor_required
def list_titles() -> Response:
    return jsonify({"titles": [title_json(t) for t in catalog.list_titles(db())]})


@bp.get("/titles/<title_id>")
@editor_required
def get_title(title_id: str) -> Response:
    return jsonify(title_json(catalog.get_title(db(), title_id), with_artworks=True))


def _focus() -> tuple[float, float] | None:
    raw_x, raw_y = request.form.get("focus_x"), request.form.get("focus_y")
    if raw_x is None and raw_y is None:
        return None
    try:
        x, y = float(raw_x or ""), float(raw_y or "")
    except ValueError:
        raise ApiError(
            422, "invalid_request", "focus_x and focus_y must both be numbers in 0..1"
        ) from None
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ApiError(422, "invalid_request", "focus_x and focus_y must both be in 0..1")
    return x, y


@bp.post("/titles/<title_id>/artworks")
@editor_required
def upload_artwork(title_id: str) -> tuple[Response, int]:
    try:
        created = _upload(title_id)
    except (ApiError, ArtworkError) as error:
        metrics.UPLOADS.labels(error.code).inc()
        raise
    except HTTPException as error:  # e.g. 413 before the body is read
        # The same code the answer carries (web.errors names a 413 file_too_large).
        outcome = "file_too_large" if error.code == 413 else f"http_{error.code}"
        metrics.UPLOADS.labels(outcome).inc()
        raise
    except Exception:
        metrics.UPLOADS.labels("failed").inc()
        raise
    metrics.UPLOADS.labels("created").inc()
    return created, 201


def _upload(title_id: str) -> Response:
    file = request.files.get("file")
    if file is None:
        raise ApiError(422, "invalid_request", "file: send the image as a multipart field 'file'")
    label = request.form.get("label", "")
    if len(label) > 200:
        raise ApiError(422, "invalid_request", "label: at most 200 characters")
    tags = tuple(t.strip() for t in request.form.get("tags", "").split(",") if t.strip())
    if len(tags) > 30 or any(len(t) > 50 for t in tags):
        raise ApiError(422, "invalid_request", "tags: at most 30 tags of at most 50 characters")
    rt = runtime()
    # Read one byte past the limit: enough to know it is too large without holding more.
    data = file.stream.read(rt.limits.max_bytes + 1)
    session = db()
    artwork = catalog.add_artwork(
        session,
        rt.store,
        title_id,
        Upload(data=data, label=label, tags=tags, focus=_focus()),
        config=rt.settings.pipeline_config(),
        runner=rt.pipeline,
    )
    session.commit()
    return jsonify(artwork_json(artwork))


@bp.patch("/artworks/<artwork_id>")
@editor_required
def patch_artwork(artwork_id: str) -> Response:
    body = json_body(ArtworkPatch)
    session = db()
    artwork = catalog.update_artwork(
        session, artwork_id, status=body.status, label=body.label, tags=body.tags
    )
    session.commit()
    return jsonify(artwork_json(artwork))


@bp.put("/titles/<title_id>/default-artwork")
@editor_required
def put_default_artwork(title_id: str) -> Response:
    body = json_body(DefaultArtwork)
    session = db()
    title = catalog.set_default_artwork(session, title_id, body.artwork_id)
    session.commit()
    return jsonify(title_json(title))


@bp.get("/policy")
@editor_required
def policy() -> Response:
    session = db()
    version = latest_version(session)
    snapshot = session.get(PolicySnapshot, version) if version else None
    serving = runtime().policy.current
    from web.ops import learner_status

    lag, leader = learner_status()
    return jsonify(
        {
            "version": version,
            "serving_version": serving.version,
            "examples_learned": snapshot.examples_learned if snapshot else 0,
            "vw_args": snapshot.vw_args if snapshot else runtime().settings.vw_args,
            "created_at": snapshot.created_at.isoformat() + "Z" if snapshot else None,
            "learner_lag_seconds": round(lag, 3),
            # The learner that leads ({host, pid, since}), or null when none does.
            "leader": leader,
        }
    )


def title_report(title: Title) -> dict[str, Any]:
    """Per variant × segment: shown, clicked, played (with 95% intervals) and the share the
    current policy gives each active variant."""
    policy = runtime().policy.current
    active = [a for a in title.artworks if a.status == "active"]
    rows = action_report(
        db(),
        title.id,
        policy,
        [Candidate(a.id, artwork_features(a)) for a in active],
        exploration=runtime().exploration,
        default_id=title.default_artwork_id,
    )
    labels = {a.id: a.label for a in title.artworks}
    for row in rows:
        row["artwork_id"] = row.pop("action")
        row["label"] = labels.get(row["artwork_id"], "")
    return {
        "title": title.id,
        "default_artwork_id": title.default_artwork_id,
        "policy_version": policy.version,
        "rows": rows,
    }


@bp.get("/titles/<title_id>/report")
@editor_required
def report(title_id: str) -> Response:
    return jsonify(title_report(catalog.get_title(db(), title_id)))


def evaluation_json(evaluation: Any) -> dict[str, Any] | None:
    if evaluation is None:
        return None
    return {
        "id": evaluation.id,
        "created_at": evaluation.created_at.isoformat() + "Z",
        "title": evaluation.slot,
        "segment": evaluation.segment,
        "since": evaluation.since.isoformat() + "Z" if evaluation.since else None,
        "until": evaluation.until.isoformat() + "Z" if evaluation.until else None,
        "events": evaluation.events,
        **{k: v for k, v in evaluation.result.items() if k not in ("events",)},
    }


@bp.get("/evaluations/latest")
@editor_required
def latest_evaluations() -> Response:
    """The newest stored offline evaluation of the whole catalog and, with `?title=`, of
    that title (`keyart evaluate` stores them); null where none was run yet."""
    from bandit.evaluation import latest_evaluation

    title = request.args.get("title")
    segment = request.args.get("segment")
    for name, value in (("title", title), ("segment", segment)):
        if value is not None and not 0 < len(value) <= 200:
            raise ApiError(422, "invalid_request", f"{name}: 1 to 200 characters")
    session = db()
    out: dict[str, Any] = {"catalog": evaluation_json(latest_evaluation(session, None, segment))}
    if title is not None:
        if session.get(Title, title) is None:
            raise ApiError(404, "unknown_title", f"no title {title!r}")
        out["title"] = evaluation_json(latest_evaluation(session, title, segment))
    return jsonify(out)


@bp.get("/titles/<title_id>/serving")
@editor_required
def title_serving(title_id: str) -> Response:
    """Apprentice or policy for this title, and the counts behind it (issue 4's report)."""
    from bandit.serving_mode import serving_mode

    session = db()
    title = session.get(Title, title_id)
    if title is None:
        raise ApiError(404, "unknown_title", f"no title {title_id!r}")
    state = runtime()
    report = serving_mode(session, title_id, state.policy.current, state.exploration)
    # Without a default variant there is nothing to apprentice to: the policy serves.
    if title.default_artwork_id is None:
        report["mode"] = "policy"
    return jsonify({"title": title_id, **report})

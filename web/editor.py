"""The editor API: titles, artwork uploads, statuses, defaults and reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import func, select
from werkzeug.exceptions import HTTPException

from artwork import catalog
from artwork.catalog import Upload
from artwork.errors import ArtworkError
from artwork.models import Artwork, Title
from bandit.features import Candidate
from bandit.lineages import describe, history, store_settings, stored_settings
from bandit.models import Decision, utcnow
from bandit.optimizer import LearningCandidate
from bandit.report import (
    LoggedOutcome,
    action_report,
    logged_outcomes,
    segment_verdict,
    timeline,
    weighted_rate,
)
from bandit.snapshots import serving_lineage
from web import metrics
from web.auth import (
    admin_required,
    create_editor,
    editor_required,
    get_editor,
    issue_token,
    list_editors,
    revoke_token,
)
from web.config import POLICY_FIELDS, ConfigError, learning_settings
from web.errors import ApiError
from web.models import Editor
from web.personalize import artwork_features
from web.schemas import (
    ArtworkPatch,
    DefaultArtwork,
    EditorCreate,
    PolicySettings,
    TitleCreate,
    json_body,
)
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
    if body.focus is not None:
        rt = runtime()
        artwork = catalog.set_focus(
            session,
            rt.store,
            artwork_id,
            (body.focus.x, body.focus.y),
            config=rt.settings.pipeline_config(),
            runner=rt.pipeline,
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
    return jsonify(policy_status())


@bp.put("/policy")
@editor_required
def put_policy() -> Response:
    """Store learning settings (they win over the environment's until cleared with `{}`):
    the learner starts a lineage for them on its next pass, and serving switches to it
    once it has caught up with the log."""
    body = json_body(PolicySettings)
    stored = _as_environment(body)
    try:
        learning_settings(runtime().settings, stored)
    except ConfigError as error:
        message = str(error)
        for field, variable in POLICY_FIELDS.items():
            message = message.replace(variable, field)
        raise ApiError(422, "invalid_settings", message) from None
    session = db()
    store_settings(session, stored, utcnow())
    session.commit()
    return jsonify(policy_status())


def _as_environment(body: PolicySettings) -> dict[str, str]:
    """The settings given, as the environment variables they stand in for."""
    out: dict[str, str] = {}
    for field, variable in POLICY_FIELDS.items():
        value = getattr(body, field)
        if value is None:
            continue
        if field == "reward_values":
            value = ",".join(f"{kind}={worth!r}" for kind, worth in value.items())
        out[variable] = str(value)
    return out


def policy_status() -> dict[str, Any]:
    """What `GET /api/v1/policy` answers and the studio's policy page shows (the one place
    both read it from): the serving lineage and its newest snapshot, the settings and where
    they come from, the learner's lag, a lineage in training and the history."""
    session = db()
    state = runtime()
    lineage = serving_lineage(session)
    described = describe(session, lineage) if lineage is not None else None
    stored = stored_settings(session)
    try:
        vw_args, rewards = learning_settings(state.settings, stored)
    except ConfigError:  # stored before a change of environment made them invalid
        vw_args, rewards = state.settings.vw_args, state.settings.reward_config()
    serving_args = lineage.settings["vw_args"] if lineage is not None else vw_args
    training = [h for h in history(session) if h["status"] == "training"]
    from web.ops import learner_status

    lag, leader = learner_status()
    return {
        # 0 before the first snapshot, as the contract has always said.
        "version": (described["version"] if described else None) or 0,
        "serving_version": state.policy.current.version,
        "examples_learned": described["examples_learned"] if described else 0,
        "vw_args": serving_args,
        "created_at": described["snapshot_at"] if described else None,
        **_vw_parts(serving_args),
        "lineage": described,
        "learner_lag_seconds": round(lag, 3),
        # The learner that leads ({host, pid, since}), or null when none does.
        "leader": leader,
        # How old the newest snapshot is, and how many logged decisions it has not seen
        # (their reward window may still be open).
        "age_seconds": _age(described),
        "decisions_not_learned": int(
            session.scalar(
                select(func.count())
                .select_from(Decision)
                .where(Decision.id > (described["cursor"] if described else 0))
            )
            or 0
        ),
        "settings": {
            "source": "stored" if stored else "environment",
            "stored": {f: stored[v] for f, v in POLICY_FIELDS.items() if v in stored},
            "vw_args": vw_args,
            "reward_values": dict(rewards.values),
            "reward_aggregation": rewards.aggregation,
        },
        "training": training[0] if training else None,
        "history": history(session),
    }


def _age(lineage: dict[str, Any] | None) -> float | None:
    if lineage is None or lineage["snapshot_at"] is None:
        return None
    moment = datetime.fromisoformat(lineage["snapshot_at"].removesuffix("Z"))
    return (utcnow() - moment).total_seconds()


def _vw_parts(vw_args: str) -> dict[str, Any]:
    """Interactions and hash bits, read back from a composed VW command line."""
    candidate, bits = LearningCandidate.from_vw_args(vw_args)
    crosses = [pair.strip() for pair in candidate.interactions.split(",") if pair.strip()]
    return {"interactions": crosses, "hash_bits": bits}


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


def title_results(title: Title) -> dict[str, Any]:
    """`title_report`, and with each row the propensity-weighted click rate of the variant in
    its segment, a plain-words verdict per segment, and the timeline of traffic share and
    click rate per variant."""
    report = title_report(title)
    outcomes = logged_outcomes(db(), title.id)
    by_segment: dict[str, list[LoggedOutcome]] = {}
    for outcome in outcomes:
        by_segment.setdefault(outcome.segment, []).append(outcome)
    labels = {a.id: a.label for a in title.artworks}
    segments: dict[str, list[dict[str, Any]]] = {}
    for row in report["rows"]:
        weighted = weighted_rate(by_segment.get(row["segment"] or "", []), row["artwork_id"])
        row["weighted_click_rate"] = weighted.as_json() if weighted else None
        segments.setdefault(row["segment"] or "", []).append(
            {**row, "action": row["artwork_id"]}
        )
    report["verdicts"] = [
        {
            "segment": segment or None,
            "verdict": segment_verdict(segment, rows, labels, title.default_artwork_id),
        }
        for segment, rows in segments.items()
    ]
    report["timeline"] = timeline(outcomes)
    return report


@bp.get("/titles/<title_id>/results")
@editor_required
def results(title_id: str) -> Response:
    """Extension: the report with weighted rates, verdicts and a timeline (the studio's)."""
    return jsonify(title_results(catalog.get_title(db(), title_id)))


def editor_json(editor: Editor) -> dict[str, Any]:
    return {
        "id": editor.id,
        "email": editor.email,
        "admin": editor.is_admin,
        "has_password": bool(editor.password_hash),
        "created_at": editor.created_at.isoformat() + "Z",
    }


@bp.get("/editors")
@admin_required
def list_editors_route() -> Response:
    return jsonify({"editors": [editor_json(e) for e in list_editors(db())]})


@bp.post("/editors")
@admin_required
def create_editor_route() -> tuple[Response, int]:
    body = json_body(EditorCreate)
    session = db()
    try:
        editor, token = create_editor(
            session, body.email, password=body.password, is_admin=body.admin
        )
    except ValueError as error:
        raise ApiError(422, "invalid_request", str(error)) from None
    session.commit()
    return jsonify({**editor_json(editor), "token": token}), 201


@bp.post("/editors/<int:editor_id>/token")
@admin_required
def issue_token_route(editor_id: int) -> tuple[Response, int]:
    session = db()
    token = issue_token(session, get_editor(session, editor_id))
    session.commit()
    return jsonify({"id": editor_id, "token": token}), 201


@bp.delete("/editors/<int:editor_id>/token")
@admin_required
def revoke_token_route(editor_id: int) -> tuple[str, int]:
    session = db()
    revoke_token(session, get_editor(session, editor_id))
    session.commit()
    return "", 204


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

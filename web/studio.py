"""The editors' studio: sign in; titles (search, create); each title's gallery (crops per
preset, features, upload, focal point, label, tags, status, default) and results (rates with
intervals, weighted estimates, verdicts, a chart over time); the policy; editors (admins).
Forms carry Flask-WTF CSRF tokens; the gallery's scripts use the editor API with the
session's CSRF token. Views parse, call services, and shape the page."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from werkzeug.wrappers import Response
from wtforms import (
    BooleanField,
    EmailField,
    FloatField,
    HiddenField,
    IntegerField,
    PasswordField,
    StringField,
)
from wtforms.validators import (
    DataRequired,
    Email,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
)

from artwork import catalog
from artwork.errors import ArtworkError
from artwork.models import Title
from bandit.evaluation import latest_evaluation
from bandit.models import utcnow
from bandit.report import LoggedOutcome, lift_over_default, outcomes_by_slot
from bandit.serving_mode import current_mode
from web.auth import (
    check_password,
    create_editor,
    get_editor,
    issue_token,
    list_editors,
    revoke_token,
    set_password,
    start_studio_session,
    studio_editor,
)
from web.editor import evaluation_json, policy_status, title_results
from web.errors import ApiError
from web.state import db, runtime

bp = Blueprint("studio", __name__, url_prefix="/studio")

TITLES_PER_PAGE = 20
# Traffic and lift on the titles page cover this much of the recent log.
RECENT = timedelta(days=7)


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class TitleForm(FlaskForm):
    id = StringField(
        "Id (used in the API)",
        validators=[
            DataRequired(),
            Length(max=200),
            Regexp(r"^[^\s/]+$", message="no spaces or slashes"),
        ],
    )
    name = StringField("Name", validators=[DataRequired(), Length(max=500)])
    genres = StringField("Genres (comma-separated)", validators=[Length(max=1000)])


class UploadForm(FlaskForm):
    file = FileField("Image", validators=[FileRequired()])
    label = StringField("Label", validators=[Length(max=200)])
    tags = StringField("Tags (comma-separated)", validators=[Length(max=500)])


class ArtworkActionForm(FlaskForm):
    artwork_id = HiddenField(validators=[DataRequired(), Length(max=64)])
    action = HiddenField(validators=[DataRequired(), Length(max=16)])


class ArtworkEditForm(FlaskForm):
    artwork_id = HiddenField(validators=[DataRequired(), Length(max=64)])
    label = StringField("Label", validators=[Length(max=200)])
    tags = StringField("Tags", validators=[Length(max=500)])


class FocusForm(FlaskForm):
    artwork_id = HiddenField(validators=[DataRequired(), Length(max=64)])
    # InputRequired, not DataRequired: 0 is a focal point on the picture's edge.
    x = FloatField("Focus x (0–1)", validators=[InputRequired(), NumberRange(0, 1)])
    y = FloatField("Focus y (0–1)", validators=[InputRequired(), NumberRange(0, 1)])


class EditorForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=320)])
    password = PasswordField(
        "Password (8 or more characters)", validators=[Optional(), Length(min=8, max=200)]
    )
    admin = BooleanField("Admin (may manage editors)")


class EditorActionForm(FlaskForm):
    editor_id = IntegerField(validators=[DataRequired()])
    action = HiddenField(validators=[DataRequired(), Length(max=16)])
    password = PasswordField("New password", validators=[Optional(), Length(min=8, max=200)])


class LogoutForm(FlaskForm):
    """Only its CSRF token: another site must not be able to sign an editor out."""


@bp.context_processor
def _page_context() -> dict[str, Any]:
    # Every page's header has the sign-out button and the links this editor may follow.
    return {"logout_form": LogoutForm(prefix="logout"), "editor": studio_editor()}


def studio_path(target: str) -> str | None:
    """`target` if it is a path within the studio to send a browser back to, else None.

    Refused: anything not under /studio/ (so no "//host" or "/\\host", which browsers read
    as another site), control characters (which cannot go in a Location header), backslashes
    (which browsers read as "/") and "." or ".." segments, plain or percent-encoded (which
    would climb out of /studio/)."""
    decoded = unquote(target)
    if not target.startswith("/studio/") or "\\" in decoded:
        return None
    if not all(c.isprintable() for c in target + decoded):
        return None
    segments = unquote(urlsplit(target).path).split("/")
    if "." in segments or ".." in segments:
        return None
    return target


@bp.before_request
def _signed_in() -> Response | None:
    if request.endpoint in ("studio.login",):
        return None
    if studio_editor() is None:
        return redirect(url_for("studio.login", next=request.path))
    return None


def _live_since(what: str) -> None:
    """Say that a change is live: the catalog's version moved when it committed, so the next
    decision is made from it (web/serving_catalog.py)."""
    flash(f"{what} Live since {utcnow():%H:%M:%S} UTC: the next decision uses it.")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    form = LoginForm()
    if form.validate_on_submit():
        editor = check_password(db(), form.email.data or "", form.password.data or "")
        if editor is not None:
            start_studio_session(editor)
            target = studio_path(request.args.get("next", ""))
            return redirect(target or url_for("studio.index"))
        flash("Wrong email or password.")
    return render_template("studio/login.html", form=form)


@bp.post("/logout")
def logout() -> Response:
    if not LogoutForm(prefix="logout").validate_on_submit():
        flash("The form expired; sign out again.")
        return redirect(url_for("studio.index"))
    session.clear()
    return redirect(url_for("studio.login"))


def _title_row(title: Title, recent: list[LoggedOutcome]) -> dict[str, Any]:
    """What the titles page says of a title: variants, mode, its `recent` traffic and the
    served policy's lift over always showing the default."""
    state = runtime()
    mode = current_mode(title.id, state.policy.current, state.exploration)["mode"]
    if title.default_artwork_id is None:
        mode = "policy"
    lift = lift_over_default(recent, title.default_artwork_id) if title.default_artwork_id else None
    return {
        "title": title,
        "variants": len(title.artworks),
        "active": sum(1 for a in title.artworks if a.status == "active"),
        "mode": mode,
        "traffic": len(recent),
        "lift": lift,
    }


@bp.route("/", methods=["GET", "POST"])
def index() -> Response | str:
    form = TitleForm(prefix="title")
    if request.method == "POST":
        if form.validate_on_submit():
            genres = [g.strip() for g in (form.genres.data or "").split(",") if g.strip()]
            try:
                created = catalog.create_title(
                    db(), form.id.data or "", form.name.data or "", genres
                )
                db().commit()
            except ArtworkError as error:
                db().rollback()
                flash(error.message)
            else:
                _live_since(f"Created {created.name}.")
                return redirect(url_for("studio.title", title_id=created.id))
        for field in (form.id, form.name, form.genres):
            for error in field.errors:
                flash(f"{field.label.text}: {error}")
    query = request.args.get("q", "")[:200]
    page = request.args.get("page", 1, type=int) or 1
    page = max(1, page)
    titles, total = catalog.search_titles(
        db(), query, offset=(page - 1) * TITLES_PER_PAGE, limit=TITLES_PER_PAGE
    )
    pages = max(1, math.ceil(total / TITLES_PER_PAGE))
    recent = outcomes_by_slot(db(), [t.id for t in titles], since=utcnow() - RECENT)
    return render_template(
        "studio/index.html",
        rows=[_title_row(t, recent[t.id]) for t in titles],
        total=total,
        query=query,
        page=page,
        pages=pages,
        form=form,
        policy=runtime().policy.current,
    )


def _tags(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


@bp.route("/titles/<title_id>", methods=["GET", "POST"])
def title(title_id: str) -> Response | str:
    session_ = db()
    found = catalog.get_title(session_, title_id)
    upload_form = UploadForm(prefix="upload")
    action_form = ArtworkActionForm(prefix="action")
    edit_form = ArtworkEditForm(prefix="edit")
    focus_form = FocusForm(prefix="focus")
    if request.method == "POST":
        state = runtime()
        try:
            if "upload-file" in request.files and upload_form.validate_on_submit():
                data = upload_form.file.data.stream.read(state.limits.max_bytes + 1)
                # As the editor API does: the pixels go to the pipeline's child process
                # (this process serves decisions and must not load torch), with its timeout.
                label, tags = upload_form.label.data or "", _tags(upload_form.tags.data or "")
                catalog.add_artwork(
                    session_,
                    state.store,
                    found.id,
                    catalog.Upload(data, label, tags),
                    config=state.settings.pipeline_config(),
                    runner=state.pipeline,
                )
                session_.commit()
                _live_since("Uploaded.")
            elif "edit-artwork_id" in request.form and edit_form.validate_on_submit():
                _own_artwork(found, edit_form.artwork_id.data or "")
                catalog.update_artwork(
                    session_,
                    edit_form.artwork_id.data or "",
                    label=edit_form.label.data or "",
                    tags=_tags(edit_form.tags.data or ""),
                )
                session_.commit()
                _live_since("Saved the label and tags.")
            elif "focus-artwork_id" in request.form and focus_form.validate_on_submit():
                _own_artwork(found, focus_form.artwork_id.data or "")
                catalog.set_focus(
                    session_,
                    state.store,
                    focus_form.artwork_id.data or "",
                    (float(focus_form.x.data or 0), float(focus_form.y.data or 0)),
                    config=state.settings.pipeline_config(),
                    runner=state.pipeline,
                )
                session_.commit()
                _live_since("Moved the focal point and cut the crops again.")
            elif "action-artwork_id" in request.form and action_form.validate_on_submit():
                artwork_id, action = action_form.artwork_id.data or "", action_form.action.data
                _own_artwork(found, artwork_id)
                if action == "default":
                    catalog.set_default_artwork(session_, found.id, artwork_id)
                elif action in ("active", "paused", "archived"):
                    catalog.update_artwork(session_, artwork_id, status=action)
                else:
                    raise ApiError(422, "invalid_request", "Unknown action.")
                session_.commit()
                _live_since(
                    {
                        "default": "Made it the default.",
                        "active": "Resumed.",
                        "paused": "Paused.",
                        "archived": "Archived.",
                    }[action or ""]
                )
            else:
                flash("The form expired or was incomplete; try again.")
                for form in (upload_form, edit_form, focus_form):
                    for name, errors in form.errors.items():
                        if name != "csrf_token":
                            flash(f"{getattr(form, name).label.text}: {'; '.join(errors)}")
        except (ArtworkError, ApiError) as error:
            session_.rollback()
            flash(error.message)
        return redirect(url_for("studio.title", title_id=found.id))
    presets = [p.name for p in runtime().settings.presets]
    return render_template(
        "studio/title.html",
        title=found,
        presets=presets,
        upload_form=upload_form,
        action_form=action_form,
        edit_form=edit_form,
        focus_form=focus_form,
        max_bytes=runtime().limits.max_bytes,
    )


def _own_artwork(title: Title, artwork_id: str) -> None:
    if artwork_id not in {a.id for a in title.artworks}:
        raise ApiError(404, "unknown_artwork", f"no artwork {artwork_id!r} in {title.name}")


@bp.get("/artworks/<artwork_id>/preview.jpg")
def preview(artwork_id: str) -> Response:
    """The whole picture, small and metadata-free, to choose a focal point on: the public
    media routes serve only crops. Editors only; the original never changes, so its key is
    the ETag."""
    artwork = catalog.get_artwork(db(), artwork_id)
    etag = artwork.original_key
    if etag in request.if_none_match:
        return Response(status=304)
    data = catalog.original_preview(runtime().store, artwork, runtime().limits)
    response = Response(data, mimetype="image/jpeg")
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


@bp.get("/titles/<title_id>/results")
def results(title_id: str) -> str:
    found = catalog.get_title(db(), title_id)
    results = title_results(found)
    labels = {a.id: a.label or a.id[:8] for a in found.artworks}
    return render_template("studio/results.html", title=found, results=results, labels=labels)


def policy_page_data() -> dict[str, Any]:
    """Everything the policy page shows, read in one place: the snapshot (policy_status),
    the newest catalog-wide offline evaluation, and each title's serving mode."""
    state = runtime()
    session_ = db()
    titles = catalog.list_titles(session_)
    modes = []
    for t in titles:
        mode = current_mode(t.id, state.policy.current, state.exploration)
        if t.default_artwork_id is None:
            mode["mode"] = "policy"
        modes.append({"title": t, **mode})
    return {
        "status": policy_status(),
        "evaluation": evaluation_json(latest_evaluation(session_, None)),
        "modes": modes,
        "settings": {
            "KEYART_VW_ARGS": state.settings.vw_args,
            "KEYART_PROBABILITY_FLOOR": state.exploration.floor,
            "KEYART_APPRENTICE_EXAMPLES": state.exploration.apprentice_examples,
            "KEYART_REWARD_WAIT": state.settings.reward_wait,
        },
    }


@bp.get("/policy")
def policy() -> str:
    return render_template("studio/policy.html", **policy_page_data())


@bp.route("/editors", methods=["GET", "POST"])
def editors() -> Response | str:
    me = studio_editor()
    if me is None or not me.is_admin:
        abort(403, "Only admin editors manage editors.")
    form = EditorForm(prefix="new")
    action_form = EditorActionForm(prefix="editor")
    session_ = db()
    if request.method == "POST":
        try:
            if "new-email" in request.form and form.validate_on_submit():
                created, token = create_editor(
                    session_,
                    form.email.data or "",
                    password=form.password.data or None,
                    is_admin=bool(form.admin.data),
                )
                session_.commit()
                flash(f"Created {created.email}. API token (shown once): {token}")
            elif "editor-action" in request.form and action_form.validate_on_submit():
                target = get_editor(session_, int(action_form.editor_id.data or 0))
                action = action_form.action.data
                if action == "password":
                    if not action_form.password.data:
                        raise ApiError(422, "invalid_request", "Give the new password.")
                    set_password(session_, target, action_form.password.data)
                    flash(f"Set a new password for {target.email}.")
                elif action == "token":
                    token = issue_token(session_, target)
                    flash(f"New API token for {target.email} (shown once): {token}")
                elif action == "revoke":
                    revoke_token(session_, target)
                    flash(f"Revoked the API token of {target.email}.")
                else:
                    raise ApiError(422, "invalid_request", "Unknown action.")
                session_.commit()
            else:
                for f in (form, action_form):
                    for name, errors in f.errors.items():
                        field = getattr(f, name)
                        flash(f"{field.label.text}: {'; '.join(errors)}")
        except ValueError as error:
            session_.rollback()
            flash(str(error))
        except ApiError as error:
            session_.rollback()
            flash(error.message)
        return redirect(url_for("studio.editors"))
    return render_template(
        "studio/editors.html",
        editors=list_editors(session_),
        form=form,
        action_form=action_form,
    )

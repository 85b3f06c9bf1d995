"""The editors' studio: sign in, see every title's variants, how each does per segment,
upload, pause and choose the fallback. Forms carry Flask-WTF CSRF tokens."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from werkzeug.wrappers import Response
from wtforms import EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, Length

from artwork import catalog
from artwork.errors import ArtworkError
from web.auth import check_password, start_studio_session, studio_editor
from web.editor import title_report
from web.state import db, runtime

bp = Blueprint("studio", __name__, url_prefix="/studio")


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class UploadForm(FlaskForm):
    file = FileField("Image", validators=[FileRequired()])
    label = StringField("Label", validators=[Length(max=200)])
    tags = StringField("Tags (comma-separated)", validators=[Length(max=500)])


class ArtworkActionForm(FlaskForm):
    artwork_id = HiddenField(validators=[DataRequired(), Length(max=64)])
    action = HiddenField(validators=[DataRequired(), Length(max=16)])


class LogoutForm(FlaskForm):
    """Only its CSRF token: another site must not be able to sign an editor out."""


@bp.context_processor
def _logout_form() -> dict[str, Any]:
    # Every page's header has the sign-out button (studio/base.html).
    return {"logout_form": LogoutForm(prefix="logout")}


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


@bp.get("/")
def index() -> str:
    titles = catalog.list_titles(db())
    return render_template(
        "studio/index.html", titles=titles, policy=runtime().policy.current, editor=studio_editor()
    )


@bp.route("/titles/<title_id>", methods=["GET", "POST"])
def title(title_id: str) -> Response | str:
    session_ = db()
    found = catalog.get_title(session_, title_id)
    upload_form = UploadForm(prefix="upload")
    action_form = ArtworkActionForm(prefix="action")
    if request.method == "POST":
        try:
            if "upload-file" in request.files and upload_form.validate_on_submit():
                data = upload_form.file.data.stream.read(runtime().limits.max_bytes + 1)
                tags = tuple(
                    t.strip() for t in (upload_form.tags.data or "").split(",") if t.strip()
                )
                # As the editor API does: the pixels go to the pipeline's child process
                # (this process serves decisions and must not load torch), with its timeout.
                catalog.add_artwork(
                    session_,
                    runtime().store,
                    found.id,
                    catalog.Upload(data, upload_form.label.data or "", tags),
                    config=runtime().settings.pipeline_config(),
                    runner=runtime().pipeline,
                )
                session_.commit()
                flash("Uploaded.")
            elif action_form.validate_on_submit():
                artwork_id, action = action_form.artwork_id.data or "", action_form.action.data
                if action == "default":
                    catalog.set_default_artwork(session_, found.id, artwork_id)
                elif action in ("active", "paused", "archived"):
                    catalog.update_artwork(session_, artwork_id, status=action)
                else:
                    flash("Unknown action.")
                session_.commit()
            else:
                flash("The form expired or was incomplete; try again.")
        except ArtworkError as error:
            session_.rollback()
            flash(error.message)
        return redirect(url_for("studio.title", title_id=found.id))
    report = title_report(found)
    return render_template(
        "studio/title.html",
        title=found,
        report=report,
        upload_form=upload_form,
        action_form=action_form,
    )

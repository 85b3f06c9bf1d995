"""The editors' studio: sign in, see every title's variants, how each does per segment,
upload, pause and choose the fallback. Forms carry Flask-WTF CSRF tokens."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from werkzeug.wrappers import Response
from wtforms import EmailField, HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, Length

from artwork import catalog
from artwork.errors import ArtworkError
from web.auth import check_password, current_editor
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


@bp.before_request
def _signed_in() -> Response | None:
    if request.endpoint in ("studio.login",):
        return None
    if current_editor() is None:
        return redirect(url_for("studio.login", next=request.path))
    return None


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    form = LoginForm()
    if form.validate_on_submit():
        editor = check_password(db(), form.email.data or "", form.password.data or "")
        if editor is not None:
            session.clear()
            session["editor_id"] = editor.id
            target = request.args.get("next", "")
            # Only ever redirect within the studio.
            return redirect(target if target.startswith("/studio/") else url_for("studio.index"))
        flash("Wrong email or password.")
    return render_template("studio/login.html", form=form)


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    return redirect(url_for("studio.login"))


@bp.get("/")
def index() -> str:
    titles = catalog.list_titles(db())
    return render_template(
        "studio/index.html", titles=titles, policy=runtime().policy.current, editor=current_editor()
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

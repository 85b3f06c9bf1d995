"""A process that serves decisions never imports torch (or OpenCV): they cost import time
and hundreds of megabytes, and only uploads and reprocessing need them. Even a web process
that takes uploads (through the API or the studio) hands the pixels to a child process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from flask.testing import FlaskClient

from tests.helpers import poster_bytes, upload
from web.config import Settings

SERVE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from web import create_app
    from web.config import Settings
    url, media, token = sys.argv[1], sys.argv[2], sys.argv[3]
    settings = Settings(var_dir=Path(media).parent, database_url=url, media_dir=Path(media),
                        secret_key="test-secret-key-0123456789", policy_poll_seconds=3600.0)
    app = create_app(settings, {"TESTING": True})
    client = app.test_client()
    import io
    from tests.helpers import poster_bytes
    uploaded = client.post("/api/v1/titles/show/artworks", headers={"Authorization": token},
        data={"file": (io.BytesIO(poster_bytes("S", "close-up", "cool")), "p.jpg")},
        content_type="multipart/form-data")
    decided = client.post("/api/v1/decisions", json={
        "titles": ["show"], "context": {"segment": "s"}, "rendition": "boxart-342"},
        headers={"Accept": "image/avif,image/webp"}).json
    one = client.get("/api/v1/titles/show/artwork?segment=s").json
    clicked = client.post("/api/v1/events", json={"events": [
        {"event_id": one["event_id"], "type": "click"}]}).status_code
    import re
    def csrf(page):
        return re.search(r'name="(?:\\w+-)?csrf_token" type="hidden" value="([^"]+)"',
                         page.get_data(as_text=True)).group(1)
    client.post("/studio/login", data={"email": "editor@example.com",
        "password": "correct horse", "csrf_token": csrf(client.get("/studio/login"))})
    studio = client.post("/studio/titles/show", follow_redirects=True, data={
        "upload-csrf_token": csrf(client.get("/studio/titles/show")),
        "upload-file": (io.BytesIO(poster_bytes("S", "group", "warm")), "p.jpg"),
        "upload-label": "group"}, content_type="multipart/form-data")
    app.extensions["keyart"].policy.stop()
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "cv2"))
    print(json.dumps({"decided": decided, "one": one, "clicked": clicked, "heavy": heavy,
                      "uploaded": uploaded.status_code, "features": uploaded.json["features"],
                      "studio": "Uploaded." in studio.get_data(as_text=True)}))
    """
)


def test_serving_and_uploading_never_import_torch_in_the_web_process(
    client: FlaskClient, editor_headers: dict[str, str], settings: Settings
) -> None:
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    for composition in ("portrait", "landscape"):
        assert upload(client, editor_headers, "show", poster_bytes("S", composition)).status_code
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE,
            settings.database_url,
            str(settings.media_dir),
            editor_headers["Authorization"],
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    (decision,) = out["decided"]["decisions"]
    assert decision["image"]["format"] == "avif"
    assert decision["placeholder"]["blurhash"]
    assert out["one"]["artwork_id"] and out["clicked"] == 202
    assert out["uploaded"] == 201 and out["features"]["faces"] == "one"
    assert out["studio"]  # an upload through the studio's form, too
    assert out["heavy"] == []


DECIDE_ONLY = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from web import create_app
    from web.config import Settings
    url, media = sys.argv[1], sys.argv[2]
    settings = Settings(var_dir=Path(media).parent, database_url=url, media_dir=Path(media),
                        secret_key="test-secret-key-0123456789", policy_poll_seconds=3600.0)
    app = create_app(settings, {"TESTING": True})
    decided = app.test_client().post("/api/v1/decisions", json={"titles": ["show"]}).json
    app.extensions["keyart"].policy.stop()
    app.extensions["keyart"].decision_log.stop(timeout=30)
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"scipy", "torch", "cv2"})
    print(json.dumps({"decided": decided, "heavy": heavy}))
    """
)


def test_a_process_that_only_decides_never_imports_scipy(
    client: FlaskClient, editor_headers: dict[str, str], settings: Settings
) -> None:
    # SciPy's statistics (editors' serving reports) were a third of a serving worker's memory.
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    for composition in ("portrait", "landscape"):
        assert upload(client, editor_headers, "show", poster_bytes("S", composition)).status_code
    result = subprocess.run(
        [sys.executable, "-c", DECIDE_ONLY, settings.database_url, str(settings.media_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    (decision,) = out["decided"]["decisions"]
    assert decision["artwork_id"]
    assert out["heavy"] == []

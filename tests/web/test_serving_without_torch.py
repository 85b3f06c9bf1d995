"""A process that only serves decisions never imports torch (or OpenCV): they cost import
time and hundreds of megabytes, and only uploads and reprocessing need them."""

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
    url, media = sys.argv[1], sys.argv[2]
    settings = Settings(var_dir=Path(media).parent, database_url=url, media_dir=Path(media),
                        secret_key="test-secret-key-0123456789", policy_poll_seconds=3600.0)
    app = create_app(settings, {"TESTING": True})
    client = app.test_client()
    decided = client.post("/api/v1/decisions", json={
        "titles": ["show"], "context": {"segment": "s"}, "rendition": "boxart-342"},
        headers={"Accept": "image/avif,image/webp"}).json
    one = client.get("/api/v1/titles/show/artwork?segment=s").json
    clicked = client.post("/api/v1/events", json={"events": [
        {"event_id": one["event_id"], "type": "click"}]}).status_code
    app.extensions["keyart"].policy.stop()
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "cv2"))
    print(json.dumps({"decided": decided, "one": one, "clicked": clicked, "heavy": heavy}))
    """
)


def test_serving_decisions_never_imports_torch(
    client: FlaskClient, editor_headers: dict[str, str], settings: Settings
) -> None:
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    for composition in ("portrait", "landscape"):
        assert upload(client, editor_headers, "show", poster_bytes("S", composition)).status_code
    result = subprocess.run(
        [sys.executable, "-c", SERVE, settings.database_url, str(settings.media_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    (decision,) = out["decided"]["decisions"]
    assert decision["image"]["format"] == "avif"
    assert decision["placeholder"]["blurhash"]
    assert out["one"]["artwork_id"] and out["clicked"] == 202
    assert out["heavy"] == []

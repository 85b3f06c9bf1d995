"""The OpenAPI document against the app's routes (it cannot drift from them), and a
schemathesis run against a live server for every public and editor operation: no 5xx and
no answer that breaks the document, on both databases."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from tests.helpers import poster_bytes, upload
from web.ops import OPERATIONS, documented

_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def test_the_document_is_the_routes(app: Flask, client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").json
    routes = {
        (_ARGUMENT.sub(r"{\1}", rule.rule), method.lower()): rule
        for rule in app.url_map.iter_rules()
        if documented(rule.endpoint)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    described = {
        (path, method): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    # Every route the app answers is described, with each of its methods, and nothing else.
    missing = [rule.endpoint for rule in routes.values() if rule.endpoint not in OPERATIONS]
    assert not missing, f"routes without an OpenAPI operation: {missing}"
    assert described.keys() == routes.keys()
    assert ("/api/v1/titles/{title_id}/report", "get") in described
    for (path, _), operation in described.items():
        # Every path parameter is declared, by the name in the path.
        declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
        assert declared == set(re.findall(r"{([^}]+)}", path)), path
        assert "default" in operation["responses"]
    refs = re.findall(
        r'"\$ref": "#/components/schemas/([^"]+)"',
        client.get("/api/v1/openapi.json").get_data(as_text=True),
    )
    assert set(refs) <= document["components"]["schemas"].keys()


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The app on a real HTTP server (werkzeug's, threaded) on a free loopback port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=30)


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    live_server: str, client: FlaskClient, editor_headers: dict[str, str], tmp_path: Path
) -> None:
    # Something to find: a title with two variants, a decision, an event.
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    for composition in ("portrait", "landscape"):
        assert (
            upload(client, editor_headers, "show", poster_bytes("C", composition)).status_code
            == 201
        )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{live_server}/api/v1/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance",
            "--max-examples",
            "12",
            "--max-time",
            "45",
            "--seed",
            "14",
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--max-redirects",
            "0",
            "--phases",
            "examples,coverage,fuzzing",
            "--suppress-health-check",
            "all",
            "--header",
            f"Authorization: {editor_headers['Authorization']}",
            "--exclude-path",
            "/metrics",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    summary = run.stdout[-6000:]
    assert run.returncode == 0, summary
    # Every operation was exercised.
    assert "No issues found" in run.stdout or "passed" in run.stdout, summary


def test_a_report_of_a_title_with_nothing_active_is_answered(
    client: FlaskClient, editor_headers: dict[str, str]
) -> None:
    # Found by schemathesis: decisions logged, then every variant paused → 500 (a division
    # by zero candidates while estimating the policy's share).
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    ids = [
        upload(client, editor_headers, "show", poster_bytes("P", c)).json["id"]
        for c in ("portrait", "landscape")
    ]
    client.post("/api/v1/decisions", json={"titles": ["show"], "context": {"segment": "a"}})
    for artwork_id in ids:
        patched = client.patch(
            f"/api/v1/artworks/{artwork_id}", json={"status": "paused"}, headers=editor_headers
        )
        assert patched.status_code == 200
    report = client.get("/api/v1/titles/show/report", headers=editor_headers)
    assert report.status_code == 200
    assert report.json["rows"] and all(row["policy_share"] is None for row in report.json["rows"])


def test_a_multipart_part_without_a_name_is_not_a_server_error(
    client: FlaskClient, editor_headers: dict[str, str]
) -> None:
    # Found by schemathesis: a part with no name came back named None → 500.
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    body = (
        b"--b\r\nContent-Disposition: form-data\r\n\r\nnameless\r\n"
        b'--b\r\nContent-Disposition: form-data; name="label"\r\n\r\nx\r\n--b--\r\n'
    )
    answer = client.post(
        "/api/v1/titles/show/artworks",
        data=body,
        headers={**editor_headers, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert answer.status_code == 422
    assert answer.json["error"]["code"] == "invalid_request"

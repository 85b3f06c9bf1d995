"""Logs an operator can read: one JSON object per line on stderr (python-json-logger's
formatter on the standard library's logging), each line of a request carrying its request
id, taken from `X-Request-ID` or made, and returned in the response. gunicorn's own lines,
and its access log, are written the same way."""

from __future__ import annotations

import contextvars
import logging
import os
import re
import socket
import sys
import uuid
from typing import Any

from flask import Flask, Response, g, request
from gunicorn.glogging import Logger as GunicornLogger
from pythonjsonlogger.json import JsonFormatter

# The request being served on this thread (None outside requests).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "keyart_request_id", default=None
)
# What a client's X-Request-ID may be: a proxy's or a UI's trace id, not arbitrary text
# that would end up in every log line. Anything else is replaced by an id of ours.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_HOST = socket.gethostname()


class _Context(logging.Filter):
    """Adds the host, and the request id while a request is served, to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.host = _HOST
        request_id = REQUEST_ID.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on whatever `sys.stderr` is when a record is written (a test harness may
    swap it; a handler holding the old one would write to a closed stream)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def json_handler() -> logging.Handler:
    handler = _Stderr()
    handler._keyart = True  # type: ignore[attr-defined]
    handler.setFormatter(
        JsonFormatter(
            "{levelname}{name}{message}{process}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
            timestamp="time",
        )
    )
    handler.addFilter(_Context())
    return handler


def configure_logging(level: str = "INFO") -> None:
    """Every log record of this process as a JSON line on stderr. Run again, it replaces
    its own handler rather than adding a second."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_keyart", False):
            root.removeHandler(handler)
    root.addHandler(json_handler())
    root.setLevel(level)
    # werkzeug's own request lines (the dev server) would repeat the access log unformatted.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def init_app(app: Flask) -> None:
    """Give every request an id: the client's `X-Request-ID` if it is a sane one, else a new
    one; it is in every log line the request causes and in the response."""

    @app.before_request
    def _request_id() -> None:
        supplied = request.headers.get("X-Request-ID", "")
        request_id = supplied if _REQUEST_ID.match(supplied) else uuid.uuid4().hex
        g.request_id = request_id
        g.request_id_token = REQUEST_ID.set(request_id)

    @app.after_request
    def _return_request_id(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id is not None:
            response.headers["X-Request-ID"] = request_id
        return response

    @app.teardown_request
    def _forget_request_id(_exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            REQUEST_ID.reset(token)


class JsonAccessLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger, writing its error log and its access log as JSON lines on
    stderr; an access line carries the request id the response returned."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            handler = json_handler()
            handler._gunicorn = True  # type: ignore[attr-defined]  # gunicorn's own marker
            log.addHandler(handler)
            log.propagate = False

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        headers = {name.lower(): value for name, value in (resp.headers or ())}
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        seconds = request_time.total_seconds()
        self.access_log.info(
            "%s %s %s",
            environ.get("REQUEST_METHOD"),
            environ.get("RAW_URI") or environ.get("PATH_INFO"),
            status,
            extra={
                "request_id": headers.get("x-request-id"),
                "method": environ.get("REQUEST_METHOD"),
                "path": environ.get("PATH_INFO"),
                "query": environ.get("QUERY_STRING") or None,
                "status": int(status) if str(status).isdigit() else status,
                "bytes": getattr(resp, "sent", None),
                "seconds": round(seconds, 6),
                "remote_addr": environ.get("REMOTE_ADDR"),
                "user_agent": environ.get("HTTP_USER_AGENT"),
                "worker_pid": os.getpid(),
            },
        )

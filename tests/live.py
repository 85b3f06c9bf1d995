"""A real `keyart serve` for tests that talk to one over HTTP: on a free loopback port, in a
process group of its own (so the learner and pipeline children it starts go with it), its
stderr (one JSON line per record) in a file, stopped by signalling the whole group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LiveServer:
    """`python -m web.cli serve ARGS --port P` with `env` over this process's environment.

    Use as a context manager: entering starts it and waits until `ready_path` answers 200
    (at most `start_timeout` seconds, failing early if the process exits); leaving stops it.
    The log is a file, not a pipe: the server logs every request, and a pipe nobody reads
    until the end fills up and stalls its workers."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        args: Sequence[str] = ("--no-learner", "--workers", "1"),
        *,
        ready_path: str = "/readyz",
        ready_headers: Mapping[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        # This checkout's code in the server, whatever else is on the path.
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), self.env.get("PYTHONPATH", "")) if p
        )
        # `keyart serve` names its own metrics directory; an inherited one would be wrong.
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.args = [*args, "--port", str(self.port)]
        self.log_path = log_path
        self.ready_path = ready_path
        self.ready_headers = dict(ready_headers or {})
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._group_gone = False

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Launch, and wait until ready (stopping it again if it never gets there)."""
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def launch(self) -> None:
        """Start the process without waiting for it (to start several at once)."""
        self._group_gone = False
        with self.log_path.open("wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "web.cli", "serve", *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            request = urllib.request.Request(
                self.base + self.ready_path, headers=self.ready_headers
            )
            try:
                with urllib.request.urlopen(request, timeout=2) as ready:
                    if ready.status == 200:
                        return
            except OSError:  # not listening yet, or not ready (an HTTPError is one too)
                pass
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"keyart serve exited before it was ready:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"keyart serve never got ready:\n{self.log()[-4000:]}")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        """The `keyart serve` process, which leads its process group."""
        assert self.process is not None
        return self.process.pid

    def owns(self, pid: int) -> bool:
        """Whether process `pid` is in this server's process group (its learner, a worker)."""
        try:
            return os.getpgid(pid) == self.pid
        except ProcessLookupError:
            return False

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        """The log's JSON records (anything else the server wrote is left out)."""
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def kill(self) -> None:
        """SIGKILL the whole process group at once: a host lost, nothing cleaned up."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=30)
        # Every member is gone: signalling the group id again could reach a stranger's.
        self._group_gone = True

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the group, then SIGKILL to whatever is left of it."""
        if self.process is None or self._group_gone:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=30)
            self._group_gone = True

    def _signal(self, which: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, which)

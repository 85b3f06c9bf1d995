"""VW's command-line driver in a worker process, so the learner can read and featurise its
next batch while VW learns the current one.

VW's driver holds the GIL for as long as it runs (a thread beside it gets a twelfth of its
usual speed), so in-process the learner's Python work and VW's would only take turns. The
worker is a plain child process (`python -m bandit.vw_driver`), started on first use and kept
for the life of the learner: it imports nothing but VW, and exits when its parent does
(end of input). One job at a time: a JSON line in (the driver's argv), a JSON line out.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any


class DriverError(RuntimeError):
    """VW's driver refused its arguments or input, or the worker running it died."""


class DriverProcess:
    """The parent's handle on the worker: `start(argv)`, then `wait()` for that job. A job
    holds the worker from `start` to `wait` (or `close`): another thread's job waits its turn.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._job = threading.Lock()

    def _spawn(self) -> subprocess.Popen[str]:
        # Wherever this package was imported from, the worker imports it from there too.
        root = str(Path(__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
        # This interpreter, this module, this process's id: nothing from outside.
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "bandit.vw_driver", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def start(self, argv: list[str]) -> None:
        """Begin learning with VW's driver on `argv` (its files name the data and models).
        The worker lives as long as the thread that started it (it is killed when that
        thread's process, or on Linux that thread, ends); a job after that starts another."""
        self._job.acquire()
        try:
            if self._process is None or self._process.poll() is not None:
                self._process = self._spawn()
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps({"argv": argv}) + "\n")
            self._process.stdin.flush()
        except OSError as error:
            self._stop()
            self._job.release()
            raise DriverError(f"the VW worker is gone ({error})") from error
        except BaseException:
            self._job.release()
            raise

    def wait(self) -> None:
        """Wait for the job `start` began; raise `DriverError` if it failed."""
        if not self._job.locked() or self._process is None:
            raise RuntimeError("no VW job is running")
        try:
            assert self._process.stdout is not None
            line = self._process.stdout.readline()
            if not line:
                self._stop()
                raise DriverError("the VW worker died while learning")
            error = json.loads(line).get("error")
            if error is not None:
                raise DriverError(error)
        finally:
            self._job.release()

    def close(self) -> None:
        """Stop the worker, abandoning a job under way; the next `start` makes a new one."""
        running = self._job.locked()
        self._stop(kill=running)
        if running:
            self._job.release()

    def _stop(self, kill: bool = False) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if kill:
            process.kill()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


_shared: DriverProcess | None = None
_shared_lock = threading.Lock()


def shared() -> DriverProcess:
    """This process's worker (one learner per process; it is not for concurrent use)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = DriverProcess()
            atexit.register(_shared.close)
        return _shared


def _serve(requests: IO[str], answers: IO[str]) -> None:
    import vowpal_wabbit_next as vw

    for line in requests:
        argv: Any = json.loads(line).get("argv")
        error = None
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            error = "argv must be a list of strings"
        else:
            try:
                # One thread: VW's separate parser thread only contends for the same cores,
                # here with the learner featurising its next batch.
                vw.run_cli_driver(argv, onethread=True)
            except vw.CLIError as failure:
                error = str(failure) or type(failure).__name__
        answers.write(json.dumps({"error": error}) + "\n")
        answers.flush()


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when the learner that started it (`parent`) dies
    (Linux), rather than finish a job nobody will read, in a directory that is gone, while
    holding on to the learner's stderr."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: a worker left behind still exits at its next job's end
    if os.getppid() != parent:  # the learner died before the line above took effect
        os._exit(1)


if __name__ == "__main__":
    _die_with_parent(int(sys.argv[1]))
    # Answers go out on a private copy of stdout; anything VW prints goes to stderr, where
    # it cannot be mistaken for one.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    _serve(sys.stdin, answers)

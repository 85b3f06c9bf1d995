"""VW's driver in its worker process: failures come back as errors naming the cause, and a
worker that dies is replaced rather than waited on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bandit.learner import learn_text
from bandit.policy import vw_argv
from bandit.vw_driver import DriverError, DriverProcess
from web.config import DEFAULT_VW_ARGS

EXAMPLE = "shared |u segment=a\n0:-1:0.5 |a id=v1\n|a id=v2\n\n"


def _learns_a_batch(driver: DriverProcess, tmp_path: Path) -> None:
    data, model = tmp_path / "data.txt", tmp_path / "model"
    data.write_text(EXAMPLE)
    driver.start([*vw_argv(DEFAULT_VW_ARGS), "-d", str(data), "-f", str(model)])
    driver.wait()
    assert model.stat().st_size > 0


def test_a_refused_job_is_reported_and_the_worker_goes_on(tmp_path: Path) -> None:
    driver = DriverProcess()
    try:
        driver.start([*vw_argv(DEFAULT_VW_ARGS), "-d", str(tmp_path / "missing.txt")])
        with pytest.raises(DriverError, match=r"missing\.txt"):
            driver.wait()
        _learns_a_batch(driver, tmp_path)
    finally:
        driver.close()


def test_a_worker_that_dies_mid_job_is_an_error_and_is_replaced(tmp_path: Path) -> None:
    driver = DriverProcess()
    try:
        fifo = tmp_path / "never-written"
        os.mkfifo(fifo)  # VW blocks opening it: the job cannot finish on its own
        driver.start([*vw_argv(DEFAULT_VW_ARGS), "-d", str(fifo)])
        assert driver._process is not None
        os.kill(driver._process.pid, signal.SIGKILL)
        with pytest.raises(DriverError, match="died"):
            driver.wait()
        _learns_a_batch(driver, tmp_path)
    finally:
        driver.close()


def test_learn_text_names_the_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="VW's driver failed to learn a batch"):
        learn_text(DEFAULT_VW_ARGS, b"not a model", EXAMPLE, tmp_path)


PARENT = """
import os, sys
from bandit.policy import vw_argv
from bandit.vw_driver import DriverProcess
from web.config import DEFAULT_VW_ARGS
driver = DriverProcess()
driver.start([*vw_argv(DEFAULT_VW_ARGS), "-d", sys.argv[1]])  # a pipe nobody will write
print(driver._process.pid, flush=True)
sys.stdin.read()
"""


def test_a_worker_dies_with_the_learner_that_started_it(tmp_path: Path) -> None:
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(fifo)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    parent.kill()
    parent.communicate()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists() and _state(worker) != "Z":
        assert time.monotonic() < deadline, "the worker outlived its learner"
        time.sleep(0.01)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"

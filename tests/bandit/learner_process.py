"""A learner process for the kill-and-restart test: one `learn_once` pass over the log at
DATABASE_URL, which SIGKILLs itself at a chosen point when asked to.

    python -m tests.bandit.learner_process URL VW_ARGS BATCH [examples|commits N]
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta

from bandit.learner import LearnReport, learn_once
from bandit.models import utcnow
from bandit.rewards import RewardConfig
from web.db import make_engine, make_sessionmaker


def main(argv: list[str]) -> None:
    url, vw_args, batch = argv[0], argv[1], int(argv[2])
    kill_at, kill_after = (argv[3], int(argv[4])) if len(argv) > 3 else ("never", 0)
    commits = 0

    def on_learned(learned: int) -> None:
        if kill_at == "examples" and learned == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_commit(_report: LearnReport) -> None:
        nonlocal commits
        commits += 1
        if kill_at == "commits" and commits == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    engine = make_engine(url)
    with make_sessionmaker(engine)() as session:
        report = learn_once(
            session,
            vw_args,
            RewardConfig(wait_seconds=600.0),
            now=utcnow() + timedelta(days=3650),
            batch_size=batch,
            on_learned=on_learned,
            on_commit=on_commit,
        )
    print(f"learned {report.learned} cursor {report.cursor}")


if __name__ == "__main__":
    main(sys.argv[1:])

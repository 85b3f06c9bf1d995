"""A small simulated world for bandit tests: titles with variants described by tags and
image features, viewer segments with click rates by variant look, and a log written the way
a serving process writes it (through `choose`) with rewards through `record_events`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from bandit.config import ExplorationConfig
from bandit.decisions import DecisionRequest
from bandit.features import Candidate
from bandit.learner import learn_once
from bandit.policy import Policy
from bandit.rewards import Event, RewardConfig, record_events
from bandit.snapshots import load_latest
from tests.helpers import decide

# Looks a variant can have: its tags and the image features the artwork room computes.
LOOKS = {
    "face": ({"tag": ["face", "close-up"], "brightness": 0.7, "saturation": 0.6, "hue": "red"}),
    "landscape": (
        {"tag": ["landscape", "wide"], "brightness": 0.4, "saturation": 0.3, "hue": "blue"}
    ),
    "logo": ({"tag": ["logo", "text"], "brightness": 0.2, "saturation": 0.1, "hue": "none"}),
}
# Click probability by segment and look.
CLICKS = {
    "romance-fans": {"face": 0.5, "landscape": 0.05, "logo": 0.05},
    "action-fans": {"face": 0.05, "landscape": 0.5, "logo": 0.05},
}
START = datetime(2026, 1, 5, 12, 0, 0)


@dataclass(frozen=True)
class Title:
    id: str
    genres: tuple[str, ...]
    variants: tuple[tuple[str, str], ...]  # (variant id, look)

    def candidates(self) -> list[Candidate]:
        return [Candidate(vid, {**LOOKS[look]}) for vid, look in self.variants]

    def look(self, variant_id: str) -> str:
        return dict(self.variants)[variant_id]


def catalog(count: int = 6) -> list[Title]:
    titles = []
    for n in range(count):
        looks = ["face", "landscape", "logo"]
        random.Random(n).shuffle(looks)  # the winning look is at a different index per title
        titles.append(
            Title(
                f"title-{n}",
                (["drama", "thriller", "comedy"][n % 3],),
                tuple((f"t{n}-{look}", look) for look in looks),
            )
        )
    return titles


def write_log(
    session: Session,
    policy: Policy,
    titles: list[Title],
    count: int,
    rng: random.Random,
    *,
    start: datetime = START,
    exploration: ExplorationConfig | None = None,
    reward_wait: float = 600.0,
    per_commit: int = 1,
) -> datetime:
    """`count` decisions a second apart, served by `policy`, and their clicks; returns the
    time after the last one. `per_commit` decisions share one group-commit log and one
    timestamp (a long log written quickly); 1 gives each its own second."""
    exploration = exploration or ExplorationConfig(floor=0.05, apprentice_examples=0)
    moment = start
    for first in range(0, count, per_commit):
        asked: list[tuple[Title, str, DecisionRequest]] = []
        for _ in range(min(per_commit, count - first)):
            title = rng.choice(titles)
            segment = rng.choice(list(CLICKS))
            request = DecisionRequest(
                title.id,
                title.candidates(),
                {
                    "segment": segment,
                    "device": rng.choice(["tv", "web", "phone"]),
                    "hour": rng.randrange(24),
                },
                {"title": title.id, "genre": list(title.genres)},
            )
            asked.append((title, segment, request))
        decided = decide(
            session, policy, [a[2] for a in asked], rng, exploration=exploration, now=moment
        )
        session.flush()
        clicks = [
            Event(decision.event_id, "click")
            for (title, segment, _), decision in zip(asked, decided, strict=True)
            if rng.random() < CLICKS[segment][title.look(decision.chosen_id)]
        ]
        if clicks:
            record_events(
                session,
                clicks,
                reward_wait=reward_wait,
                known_types=["click", "play", "impression"],
                now=moment + timedelta(seconds=5),
            )
        moment += timedelta(seconds=len(asked))
    session.commit()
    return moment


def learn_rounds(
    session: Session,
    vw_args: str,
    titles: list[Title],
    rounds: int,
    per_round: int,
    seed: int,
) -> Policy:
    """Serve, log, reward and learn, `rounds` times: the real loop on simulated traffic."""
    rng = random.Random(seed)
    rewards = RewardConfig(wait_seconds=600.0)
    moment = START
    policy = Policy(vw_args)
    for _ in range(rounds):
        moment = write_log(session, policy, titles, per_round, rng, start=moment)
        learn_once(session, vw_args, rewards, now=moment + timedelta(hours=1))
        policy, _ = load_latest(session, vw_args)
        moment += timedelta(hours=1)
    return policy


def weights(policy: Policy) -> np.ndarray:
    """Every weight and its learning-rate state (adaptive and normalised sums). The fourth
    slot of VW's stride is gd's per-update scratch, recomputed before use and not saved in
    a model, so it is left out."""
    return np.asarray(policy.workspace.weights())[..., :3].copy()

"""Cold start: what the policy learned about looks carries over to variants it never saw."""

from __future__ import annotations

import random

from sqlalchemy.orm import Session

from bandit.config import ExplorationConfig
from bandit.decisions import DecisionRequest, choose, shaped_distribution
from bandit.features import Candidate
from tests.bandit.world import LOOKS, catalog, learn_rounds
from web.config import DEFAULT_VW_ARGS


def test_new_variant_resembling_what_a_segment_clicked_gets_its_traffic(
    session: Session,
) -> None:
    policy = learn_rounds(session, DEFAULT_VW_ARGS, catalog(), rounds=4, per_round=600, seed=11)
    assert policy.version == 4

    # A title nobody has seen, with two variants nobody has seen and no reward for either:
    # one looks like what romance fans click (a face close-up), one like nothing seen before.
    resembling = Candidate("new-face", {**LOOKS["face"], "brightness": 0.65})
    unrelated = Candidate(
        "new-abstract", {"tag": ["abstract", "pattern"], "brightness": 0.5, "hue": "green"}
    )
    exploration = ExplorationConfig(floor=0.02, apprentice_examples=200)
    for order in ([unrelated, resembling], [resembling, unrelated]):
        request = DecisionRequest(
            "new-title",
            order,
            {"segment": "romance-fans", "device": "tv", "hour": 20},
            {"title": "new-title", "genre": ["drama"]},
        )
        distribution, mode = shaped_distribution(policy, request, exploration)
        assert mode == "policy"
        share = dict(zip([c.id for c in order], distribution, strict=True))
        assert share["new-face"] > share["new-abstract"], share

        served = choose(policy, [request] * 2000, random.Random(5), exploration=exploration)
        chosen = [d.chosen_id for d in served]
        assert chosen.count("new-face") > 3 * chosen.count("new-abstract")

    # The same new variants for action fans: the face close-up is no longer the favourite,
    # so the preference above is the segment's, not a bias towards any one candidate.
    landscape = Candidate("new-wide", {**LOOKS["landscape"], "brightness": 0.45})
    request = DecisionRequest(
        "new-title",
        [resembling, landscape],
        {"segment": "action-fans", "device": "web", "hour": 9},
        {"title": "new-title", "genre": ["drama"]},
    )
    distribution, _ = shaped_distribution(policy, request, exploration)
    assert distribution[1] > distribution[0]

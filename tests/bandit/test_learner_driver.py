"""The learner's batches are learned by VW's own driver, chained through saved models: the
result must predict exactly as one workspace that learned every example in turn."""

from __future__ import annotations

import random
from pathlib import Path

from bandit.features import Candidate, example_lines
from bandit.learner import learn_text
from bandit.policy import Policy
from web.config import DEFAULT_VW_ARGS


def _examples(rng: random.Random, count: int, labelled: bool = True) -> list[list[str]]:
    looks = ["face", "group", "landscape", "dark", "bright"]
    variants = [
        Candidate(f"v{k}", {"tag": rng.sample(looks, 2), "brightness": round(rng.random(), 3)})
        for k in range(6)
    ]
    out = []
    for _ in range(count):
        context = {"segment": rng.choice("abc"), "hour": rng.randrange(24)}
        chosen = rng.sample(variants, 3)
        index = rng.randrange(3)
        cost = -1.0 if rng.random() < 0.3 else 0.0
        label = (index, cost, 1 / 3) if labelled else None
        out.append(example_lines(context, {"title": "t"}, chosen, label))
    return out


def _predictions(policy: Policy, probes: list[list[str]]) -> list[list[tuple[int, float]]]:
    return [
        sorted(policy.workspace.predict_one([policy._parser.parse_line(x) for x in lines]))
        for lines in probes
    ]


def test_chained_driver_batches_predict_as_one_workspace(tmp_path: Path) -> None:
    examples = _examples(random.Random(5), 1500)
    probes = _examples(random.Random(6), 200, labelled=False)

    whole = Policy(DEFAULT_VW_ARGS)
    for lines in examples:
        whole.learn_lines(lines)

    def text(batch: list[list[str]]) -> str:
        return "\n\n".join("\n".join(lines) for lines in batch) + "\n\n"

    model = None
    for start, end in ((0, 700), (700, 1200), (1200, 1500)):
        model = learn_text(DEFAULT_VW_ARGS, model, text(examples[start:end]), tmp_path)
    chained = Policy(DEFAULT_VW_ARGS, model)

    expected = _predictions(whole, probes)
    assert _predictions(chained, probes) == expected
    # The comparison can tell: the last batch alone, on a new model, predicts otherwise.
    alone = Policy(
        DEFAULT_VW_ARGS, learn_text(DEFAULT_VW_ARGS, None, text(examples[1200:]), tmp_path)
    )
    assert _predictions(alone, probes) != expected
    # Learning happened: the model does not answer uniformly everywhere.
    assert any(max(p for _, p in scores) > 0.5 for scores in expected)

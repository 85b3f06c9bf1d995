"""A policy: a VW `--cb_explore_adf` model that turns an example into a distribution over
candidates, and the seeded draw that picks one of them with exactly that probability."""

from __future__ import annotations

import hmac
import shlex
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import vowpal_wabbit_next as vw

from bandit.features import (
    Candidate,
    context_text,
    example_lines,
    serving_action_line,
    serving_shared_line,
)

_UNIT = float(1 << 53)
# Parsed examples kept per policy, as serving lays them out (`serving_action_line`): a
# context's shared line, and a (title, variant) line, repeat across requests, and parsing
# them anew cost more than the prediction. Each holds up to about 30 KB of VW's memory.
_EXAMPLE_CACHE = 2_000
_SHARED_CACHE = 500


def vw_argv(vw_args: str) -> list[str]:
    argv = shlex.split(vw_args)
    return argv if "--quiet" in argv else [*argv, "--quiet"]


class Policy:
    """One loaded VW model and its snapshot version.

    VW is neither thread-safe nor GIL-free, so calls are serialised by a lock; serving
    scales with processes, not threads.
    """

    def __init__(
        self,
        vw_args: str,
        model: bytes | None = None,
        version: int = 0,
        slot_examples: Mapping[str, int] | None = None,
    ) -> None:
        argv = vw_argv(vw_args)
        self.vw_args = vw_args
        self.version = version
        # The lineage whose snapshot this is (`bandit.lineages`); None: none yet.
        self.lineage_id: int | None = None
        # Examples learned per slot: below the apprentice threshold a slot serves its default.
        self.slot_examples: dict[str, int] = dict(slot_examples or {})
        self.workspace = (
            vw.Workspace(argv, model_data=model) if model is not None else vw.Workspace(argv)
        )
        self._parser = vw.TextFormatParser(self.workspace)
        self._lock = threading.Lock()
        self._examples: dict[tuple[str, str], Any] = {}  # (candidate line, slot text)
        self._shared: dict[str, Any] = {}  # by context text
        # vowpal_wabbit_next 0.7's core call, if this binding has it; else the public one.
        self._fast = hasattr(getattr(self.workspace, "_workspace", None), "predict_multi_ex_one")

    def _parse_into(self, cache: dict[Any, Any], limit: int, key: Any, line: str) -> Any:
        """Parse `line` and keep it in `cache` under `key` while this workspace lives (call
        under the lock, on a miss). Prediction leaves an example as it found it
        (tests/bandit/test_policy.py checks predictions on reused examples equal those on
        fresh ones), so reusing one is safe."""
        if len(cache) >= limit:
            cache.clear()
        parsed = self._parser.parse_line(line)
        # The binding's core example: `_predict` hands these straight to VW.
        example = cache[key] = parsed._example if self._fast else parsed
        return example

    def _predict(self, examples: list[Any]) -> list[tuple[int, float]]:
        if self._fast:
            # `Workspace.predict_one` without its per-call label check (these examples were
            # parsed without labels by this workspace's own parser): a tenth of serving time.
            return self.workspace._workspace.predict_multi_ex_one(examples)  # type: ignore[no-any-return]
        return self.workspace.predict_one(examples)  # type: ignore[return-value]

    def distribution(
        self,
        context: Mapping[str, Any],
        slot_features: Mapping[str, Any],
        candidates: Sequence[Candidate],
        context_tokens: str | None = None,
        slot_tokens: str | None = None,
    ) -> list[float]:
        """Probability of each candidate, in the candidates' order, summing to one."""
        if len(candidates) == 1:
            return [1.0]
        text = context_text(context) if context_tokens is None else context_tokens
        slot_text = context_text(slot_features) if slot_tokens is None else slot_tokens
        shared, actions = self._shared, self._examples
        with self._lock:
            example = shared.get(text)
            if example is None:
                example = self._parse_into(shared, _SHARED_CACHE, text, serving_shared_line(text))
            examples = [example]
            for c in candidates:
                # Keyed by both texts, whose hashes Python keeps: no line is built to look up.
                key = (c.line, slot_text)
                example = actions.get(key)
                if example is None:
                    line = serving_action_line(c, slot_text)
                    example = self._parse_into(actions, _EXAMPLE_CACHE, key, line)
                examples.append(example)
            scored = self._predict(examples)
        # VW answers (index, probability) pairs sorted by score, not by index.
        probabilities = [0.0] * len(candidates)
        for index, probability in scored:
            probabilities[index] = float(probability)
        return normalise(probabilities)

    def learn(
        self,
        context: Mapping[str, Any],
        slot_features: Mapping[str, Any],
        candidates: Sequence[Candidate],
        chosen_index: int,
        cost: float,
        probability: float,
    ) -> None:
        lines = example_lines(context, slot_features, candidates, (chosen_index, cost, probability))
        with self._lock:
            self.workspace.learn_one([self._parser.parse_line(line) for line in lines])

    def learn_lines(self, lines: Sequence[str]) -> None:
        """Learn one multi-line example already in VW text format (see `example_lines`)."""
        with self._lock:
            self.workspace.learn_one([self._parser.parse_line(line) for line in lines])

    def serialize(self) -> bytes:
        with self._lock:
            return self.workspace.serialize()


def normalise(probabilities: Sequence[float]) -> list[float]:
    """Scale to sum one in double precision: VW's float32 shares sum only nearly to one,
    and the logged probability must be the one the draw really used."""
    total = sum(probabilities)
    if total <= 0:
        return [1.0 / len(probabilities)] * len(probabilities)
    return [p / total for p in probabilities]


def with_floor(probabilities: Sequence[float], floor: float) -> list[float]:
    """Mix `probabilities` with the uniform so every entry is at least `floor`:
    p = floor + (1 − K·floor)·p. When K·floor ≥ 1 the floor cannot hold for all: uniform."""
    k = len(probabilities)
    if floor <= 0 or k < 2:
        return list(probabilities)
    if k * floor >= 1:
        return [1.0 / k] * k
    return normalise([floor + (1 - k * floor) * p for p in probabilities])


def apprentice(count: int, default_index: int, floor: float) -> list[float]:
    """The editor's default with 1 − (K − 1)·floor, every other candidate with the floor;
    uniform when the floor is too large for that to favour the default."""
    if count < 2:
        return [1.0]
    if (count - 1) * floor >= 1 - floor:
        return [1.0 / count] * count
    probabilities = [floor] * count
    probabilities[default_index] = 1.0 - (count - 1) * floor
    return probabilities


def sticky_seed(user: str, slot: str, period: int, key: bytes = b"") -> int:
    """The same viewer, slot and period always give the same draw (for the same `key`, the
    secret of `ExplorationConfig.viewer_key`: the seed is logged, and must not give away
    the viewer any more than the log's user hash does)."""
    digest = hmac.digest(key, f"{user}\x1f{slot}\x1f{period}".encode(), "sha256")
    return int.from_bytes(digest[:8], "big") >> 1


def draw(probabilities: Sequence[float], seed: int) -> int:
    """Index chosen by the 63-bit `seed`: candidate i is chosen for a fraction p[i] of seeds.

    The uniform number comes from the seed's top 53 bits, walked along the cumulative
    distribution in candidate order, so similar distributions give the same choice for the
    same seed (which is what keeps sticky viewers' artwork steady).
    """
    u = (seed >> 10) / _UNIT
    cumulative = 0.0
    for index, probability in enumerate(probabilities):
        cumulative += probability
        if u < cumulative:
            return index
    # Rounding can leave the sum a hair under one: fall back to the last possible action.
    return max(i for i, p in enumerate(probabilities) if p > 0)

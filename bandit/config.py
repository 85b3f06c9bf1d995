"""The decision engine's knobs, as frozen dataclasses validated on construction: how examples
are featurised and hashed, how much the policy must explore, and how VW is started."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

# VW keys a namespace by its first character, so two namespaces sharing a first letter
# would silently be one; `check_namespaces` enforces distinct letters. (The names are also
# part of every feature's hash: renaming them would orphan every saved model.)
NAMESPACES = {"context": "u", "slot": "t", "action": "a"}

# Options that would make a serving or learning workspace read or write files, listen on a
# port, or change hashing/interactions behind the featuriser's back.
_FORBIDDEN_VW_OPTIONS = {
    "-d": "reads a data file",
    "--data": "reads a data file",
    "-f": "writes a model file",
    "--final_regressor": "writes a model file",
    "-i": "reads a model file",
    "--initial_regressor": "reads a model file",
    "-c": "writes a cache file",
    "--cache": "writes a cache file",
    "--cache_file": "writes a cache file",
    "-p": "writes predictions to a file",
    "--predictions": "writes predictions to a file",
    "--daemon": "listens on a port",
    "-b": "is set by KEYART_HASH_BITS",
    "--bit_precision": "is set by KEYART_HASH_BITS",
    "-q": "is set by KEYART_INTERACTIONS",
    "--quadratic": "is set by KEYART_INTERACTIONS",
    "--interactions": "is set by KEYART_INTERACTIONS",
    "--cubic": "is set by KEYART_INTERACTIONS",
}


def check_namespaces(names: dict[str, str]) -> None:
    """Raise ValueError if two namespace names share a first character."""
    seen: dict[str, str] = {}
    for name in names.values():
        if not name or not name[0].isalpha():
            raise ValueError(f"namespace {name!r} must start with a letter")
        other = seen.get(name[0])
        if other is not None:
            raise ValueError(
                f"namespaces {other!r} and {name!r} share the first letter {name[0]!r}; "
                "VW would hash them as one namespace"
            )
        seen[name[0]] = name


check_namespaces(NAMESPACES)


@dataclass(frozen=True)
class FeatureConfig:
    """Which namespaces are crossed, and how many bits the feature hash has.

    Interactions are pairs of namespace roles (`context`, `slot`, `action`); the default
    crosses the viewer with the variant (which look each kind of viewer responds to) and the
    title with the variant (which look works for this title at all).

    18 bits is 262,144 weight slots. A decision has about 10 context, 5 title and 10 variant
    features, so the two crosses make about 150 hashed features per candidate; the distinct
    crossed features across a catalog grow with segments × variant tags and titles × variant
    ids, which stays far below 2^18 until tens of thousands of variants. Raise the bits for a
    bigger catalog: each extra bit doubles the snapshot's worst-case size.
    """

    interactions: tuple[tuple[str, str], ...] = (("context", "action"), ("slot", "action"))
    hash_bits: int = 18

    def __post_init__(self) -> None:
        if not 10 <= self.hash_bits <= 30:
            raise ValueError("hash bits must be between 10 and 30")
        for pair in self.interactions:
            if len(pair) != 2 or any(role not in NAMESPACES for role in pair):
                raise ValueError(
                    f"interaction {pair!r} must pair two of {', '.join(sorted(NAMESPACES))}"
                )

    def vw_args(self) -> str:
        crosses = " ".join(f"-q {NAMESPACES[a][0]}{NAMESPACES[b][0]}" for a, b in self.interactions)
        return f"{crosses} -b {self.hash_bits}".strip()

    @classmethod
    def parse_interactions(cls, text: str) -> tuple[tuple[str, str], ...]:
        """`"context*action, slot*action"` → (("context", "action"), ("slot", "action"))."""
        pairs = []
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            parts = tuple(part.strip() for part in item.split("*"))
            if len(parts) != 2 or any(p not in NAMESPACES for p in parts):
                raise ValueError(
                    f"{item!r} is not ROLE*ROLE with roles {', '.join(sorted(NAMESPACES))}"
                )
            pairs.append((parts[0], parts[1]))
        return tuple(pairs)


def check_exploration_args(vw_args: str) -> list[str]:
    """The argv of `vw_args` if it is a `--cb_explore_adf` setup VW accepts, else ValueError.

    Files, ports, hashing and interactions are not VW arguments' business here: the first
    would make serving touch the disk, the others belong to `FeatureConfig`.
    """
    try:
        argv = shlex.split(vw_args)
    except ValueError as error:
        raise ValueError(f"cannot be split into arguments ({error})") from None
    if "--cb_explore_adf" not in argv:
        raise ValueError("must include --cb_explore_adf")
    for token in argv:
        option = token.split("=", 1)[0]
        if option in _FORBIDDEN_VW_OPTIONS:
            raise ValueError(f"must not use {option}: it {_FORBIDDEN_VW_OPTIONS[option]}")
    return argv


def compose_vw_args(exploration_args: str, features: FeatureConfig) -> str:
    """The full VW command line: exploration arguments, then interactions and hash bits."""
    argv = check_exploration_args(exploration_args)
    if "--quiet" not in argv:
        argv.append("--quiet")
    return f"{shlex.join(argv)} {features.vw_args()}"


@dataclass(frozen=True)
class ExplorationConfig:
    """How a distribution is shaped before the draw.

    floor: every candidate keeps at least this probability. It composes with VW's own
        exploration by mixing: p = floor + (1 − K·floor)·p_vw for K candidates, so with
        `--epsilon ε` each candidate has at least floor + (1 − K·floor)·ε/K. When K·floor
        exceeds one the floor cannot hold for all and the distribution is uniform.
    apprentice_examples: below this many learned examples of a slot, the slot's default
        action is served with 1 − (K − 1)·floor and every other candidate with the floor
        (for two variants: the default with 1 − floor), so a new title starts from the
        editor's choice while still collecting the exploration data the learner needs.
    sticky_period_seconds: a viewer's draw for a slot is fixed for this long.
    floor_min, floor_decay_examples: the floor a slot's decisions use decays with the
        examples the slot has learned, n: floor(n) = floor_min + (floor − floor_min)·d/(d + n)
        for d = floor_decay_examples, so a new title explores at `floor` and a well-learned
        one pays only `floor_min` per candidate (None: no decay). Each decision logs the
        distribution it was drawn from, so the logged probabilities stay exact.
    viewer_key: the secret that viewer keys are hashed with (for the log's `user_hash` and
        the sticky draw's seed). Keyed, because a plain hash of a guessable viewer id (an
        account number, an email) is reversed by hashing guesses; the same key keeps the
        same viewers' draws, and a new key starts every viewer afresh.
    """

    floor: float = 0.01
    apprentice_examples: int = 200
    sticky_period_seconds: float = 7 * 24 * 3600.0
    viewer_key: bytes = field(default=b"", repr=False)
    floor_min: float | None = None
    floor_decay_examples: int = 5000

    def __post_init__(self) -> None:
        if not 0.0 <= self.floor < 0.5:
            raise ValueError("probability floor must be at least 0 and below 0.5")
        if self.floor_min is not None and not 0.0 <= self.floor_min <= self.floor:
            raise ValueError("minimum probability floor must be at least 0 and at most the floor")
        if self.floor_decay_examples < 1:
            raise ValueError("floor decay must be at least one example")
        if self.apprentice_examples < 0:
            raise ValueError("apprentice threshold must be zero or more examples")
        if self.sticky_period_seconds <= 0:
            raise ValueError("sticky period must be positive")

    def floor_for(self, learned: int) -> float:
        """The floor for a slot that has learned `learned` examples."""
        if self.floor_min is None:
            return self.floor
        span = self.floor - self.floor_min
        return self.floor_min + span * self.floor_decay_examples / (
            self.floor_decay_examples + max(0, learned)
        )


# The defaults a server, the simulator and the benchmarks decide and learn with unless told
# otherwise: VW's exploration arguments (then interactions and hash bits from FeatureConfig)
# and the probability floor, decaying from 1% towards 0.1% per title as it learns (halfway
# after 5,000 examples).
#
# `--clip_p 1` gives every learned example importance weight 1: the regression learns the
# shown variant's reward as observed, as SquareCB's analysis assumes, rather than scaled by
# 1/p (VW's default), where one click on a variant shown at 2% weighed as much as 45 on a
# favourite shown at 90%. The logged probabilities are untouched (offline evaluation still
# weights by them); only the learner's weighting changes. Without the large weights, a
# slower rate than VW's 0.5 learns best. Chosen by `benchmarks/quality.py --seeds 3` as
# the best worst case over seven worlds of different shapes (40,000 decisions each, a
# learning pass every 2,000; share of the oracle's expected click rate over the last 20%,
# mean of three seeds; noise*: noise_features without its noise traits):
#
#   setting                       default segments devices one_best noise  drift noise*  worst
#   squarecb (VW's weighting)       93.0%   86.5%   83.4%   86.3%   85.0%  84.6%  84.4%  83.4%
#   --clip_p 1                      93.9%   85.0%   84.7%   90.7%   87.2%  85.5%  87.6%  84.7%
#   --clip_p 1 -l 0.2               95.2%   87.6%   88.2%   91.1%   88.1%  85.6%  87.9%  85.6%
#   --clip_p 1 -l 0.1               95.4%   88.9%   88.5%   91.4%   88.2%  85.6%  89.2%  85.6%
#   --clip_p 1 -l 0.05 (shipped)    94.9%   88.7%   89.8%   94.2%   89.2%  86.7%  89.4%  86.7%
#   --clip_p 1 -l 0.02              92.3%   88.2%   89.6%   96.6%   87.8%  85.2%  89.3%  85.2%
#   best single variant             80.7%   88.1%   85.9%  100.0%   86.5%  87.2%  86.5%  80.7%
#   Thompson per cell               82.9%   82.5%   80.5%   86.5%   84.5%  84.0%  84.5%  80.5%
#
# On three other seeds (`--seed 500 --seeds 3`) the shipped setting's worst world was 86.2%
# and the old default's (VW's weighting and rate) 83.8%; over the six seeds the worst world's
# mean is 86.6% (drift), against 86.1% at `-l 0.1` and 84.2% for the old default.
# A rate that decays more slowly than VW's `--power_t 0.5` (0, 0.25, 0.35) had no better
# worst world: what drift gained, segments or one_best lost (README, "A rate that decays
# more slowly"); nor did exploring less (`--gamma_scale 100`: drift lost 1.6 points).
DEFAULT_EXPLORATION_ARGS = "--cb_explore_adf --squarecb --clip_p 1 -l 0.05"
DEFAULT_VW_ARGS = compose_vw_args(DEFAULT_EXPLORATION_ARGS, FeatureConfig())
DEFAULT_EXPLORATION = ExplorationConfig(floor=0.01, floor_min=0.001, floor_decay_examples=5000)

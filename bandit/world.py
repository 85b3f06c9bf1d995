"""The simulator's synthetic world: segments and devices of viewers, titles with artwork
variants described by image-like traits, and the ground-truth click model. A world is a JSON
or TOML file users can edit; `load_world` validates it and names any wrong field.

A world may change during a run. Its optional `phases` list says what changes, and from which
fraction of the run's decisions on (`starts_at`, strictly between 0 and 1, increasing):

    "phases": [{"starts_at": 0.5,
                "segments": {"family": {"palette=dark": 0.8}},
                "devices": {"tv": {}},
                "appeal": {"title-03": {"t03-v1": 1.2, "t03-v0": 0.0}}}]

From `starts_at` on, each named segment's or device's `prefers` is replaced by the one given
(`{}`: it no longer cares), and each named variant's `appeal` by the number given; everything
not named carries over from the phase before. Names that are not in the world are an error.
`World.click_rates()` is the start of the run; `World.click_rates_at(fraction)` is the phase
in effect at that fraction of the run, and `World.phase_bounds()` the fractions at which
phases start (the first is 0.0). A world without `phases` is the same all run long.
"""

from __future__ import annotations

import bisect
import json
import math
import tomllib
from collections.abc import Mapping
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from scipy.special import expit, logit

# A change in the click logit past this already makes a click certain or impossible; with
# numeric traits bounded too, every logit the click model adds up stays finite.
MAX_LOGIT_CHANGE = 100.0
MAX_TRAIT = 1e6
# numpy's and Python's generators take any non-negative seed; this one fits a 64-bit int.
SEED_LIMIT = 2**63


def _bounded_trait(value: bool | int | float | str) -> bool | int | float | str:
    if not isinstance(value, bool | str) and abs(value) > MAX_TRAIT:
        raise ValueError(f"a numeric trait must lie within ±{MAX_TRAIT:g}")
    return value


Trait = Annotated[bool | int | float | str, AfterValidator(_bounded_trait)]
LogitChange = Annotated[float, Field(ge=-MAX_LOGIT_CHANGE, le=MAX_LOGIT_CHANGE)]


class WorldError(ValueError):
    """The world file is unreadable or invalid; the message names the field."""


class _Strict(BaseModel):
    # NaN and infinities (which TOML and Python's json read) would poison every rate.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Audience(_Strict):
    """A kind of viewer (a segment, or a device) and how much it likes each trait.

    `prefers` maps a trait name (numeric or boolean trait: added times its value) or
    `name=value` (categorical trait: added when the variant has that value) to a change in
    the click logit.
    """

    name: str = Field(min_length=1, max_length=100)
    weight: float = Field(gt=0, description="share of traffic, relative to the others")
    prefers: dict[str, LogitChange] = Field(default_factory=dict)


class Variant(_Strict):
    id: str = Field(min_length=1, max_length=64)
    traits: dict[str, Trait] = Field(default_factory=dict)
    # A change in the click logit every viewer sees: a simply better (or worse) image.
    appeal: LogitChange = 0.0


class WorldTitle(_Strict):
    id: str = Field(min_length=1, max_length=200)
    genres: list[str] = Field(default_factory=list)
    base_rate: float = Field(gt=0, lt=1, description="click rate of a neutral variant")
    weight: float = Field(default=1.0, gt=0)
    default: int = Field(default=0, ge=0, description="index of the editor's default variant")
    variants: list[Variant] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self) -> WorldTitle:
        if self.default >= len(self.variants):
            raise ValueError(f"default: {self.default} is not a variant index")
        ids = [v.id for v in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError("variants: ids must be unique within a title")
        return self


class Phase(_Strict):
    """What changes from `starts_at` (a fraction of the run's decisions) on; see the module
    docstring."""

    starts_at: float = Field(gt=0, lt=1)
    # Segment or device name → its new `prefers`, replacing the old one whole.
    segments: dict[str, dict[str, LogitChange]] = Field(default_factory=dict)
    devices: dict[str, dict[str, LogitChange]] = Field(default_factory=dict)
    # Title id → variant id → the variant's new `appeal`.
    appeal: dict[str, dict[str, LogitChange]] = Field(default_factory=dict)


class World(_Strict):
    seed: int = Field(default=0, ge=0, lt=SEED_LIMIT)
    segments: list[Audience] = Field(min_length=1)
    devices: list[Audience] = Field(min_length=1)
    countries: list[str] = Field(default_factory=lambda: ["US"], min_length=1)
    titles: list[WorldTitle] = Field(min_length=1)
    phases: list[Phase] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> World:
        for field, names in (
            ("titles", [t.id for t in self.titles]),
            ("segments", [s.name for s in self.segments]),
            ("devices", [d.name for d in self.devices]),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"{field}: names must be unique")
        for field, weights in (
            ("titles", [t.weight for t in self.titles]),
            ("segments", [s.weight for s in self.segments]),
            ("devices", [d.weight for d in self.devices]),
        ):
            # Traffic is drawn with probabilities weight / total: the total must be finite.
            if not math.isfinite(sum(weights)):
                raise ValueError(f"{field}: weights must add up to a finite number")
        self._check_phases()
        return self

    def _check_phases(self) -> None:
        segments = {s.name for s in self.segments}
        devices = {d.name for d in self.devices}
        variants = {t.id: {v.id for v in t.variants} for t in self.titles}
        previous = 0.0
        for i, phase in enumerate(self.phases):
            where = f"phases.{i}"
            if phase.starts_at <= previous:
                raise ValueError(
                    f"{where}.starts_at: {phase.starts_at} must be after the phase before "
                    f"({previous})"
                )
            previous = phase.starts_at
            for field, kind, known, names in (
                ("segments", "segment", segments, phase.segments),
                ("devices", "device", devices, phase.devices),
                ("appeal", "title", variants, phase.appeal),
            ):
                for name in names:
                    if name not in known:
                        raise ValueError(f"{where}.{field}.{name}: no such {kind}")
            for title, appeals in phase.appeal.items():
                for variant in appeals:
                    if variant not in variants[title]:
                        raise ValueError(
                            f"{where}.appeal.{title}.{variant}: no such variant in {title}"
                        )

    def phase_bounds(self) -> tuple[float, ...]:
        """The fractions of the run at which phases start: 0.0, then each `starts_at`."""
        return (0.0, *(p.starts_at for p in self.phases))

    def phase_at(self, fraction: float) -> int:
        """The index of the phase in effect at `fraction` (0 ≤ fraction ≤ 1) of the run: 0
        before the first `starts_at`, i from `phases[i - 1].starts_at` on."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must lie within [0, 1], not {fraction}")
        return bisect.bisect_right(self.phase_bounds(), fraction) - 1

    def click_rates(self) -> np.ndarray:
        """True click probability at the start of the run, shape (segments, devices, titles,
        max variants); variants a title does not have are NaN. A new array each call."""
        return self._phase_rates[0].copy()

    def click_rates_at(self, fraction: float) -> np.ndarray:
        """`click_rates()` of the phase in effect at `fraction` (0 ≤ fraction ≤ 1) of the
        run's decisions. Computed once per phase and shared: the array is read-only, so a
        simulator may call this for every decision."""
        return self._phase_rates[self.phase_at(fraction)]

    @cached_property
    def _phase_rates(self) -> tuple[np.ndarray, ...]:
        prefers = {
            "segments": {s.name: s.prefers for s in self.segments},
            "devices": {d.name: d.prefers for d in self.devices},
        }
        appeal = {(t.id, v.id): v.appeal for t in self.titles for v in t.variants}
        tables = [self._rates(prefers, appeal)]
        for phase in self.phases:
            prefers = {
                "segments": {**prefers["segments"], **phase.segments},
                "devices": {**prefers["devices"], **phase.devices},
            }
            appeal = {
                **appeal,
                **{(t, v): a for t, changes in phase.appeal.items() for v, a in changes.items()},
            }
            tables.append(self._rates(prefers, appeal))
        for table in tables:
            table.flags.writeable = False
        return tuple(tables)

    def _rates(
        self,
        prefers: Mapping[str, Mapping[str, Mapping[str, float]]],
        appeal: Mapping[tuple[str, str], float],
    ) -> np.ndarray:
        most = max(len(t.variants) for t in self.titles)
        rates = np.full((len(self.segments), len(self.devices), len(self.titles), most), np.nan)
        for s, segment in enumerate(self.segments):
            for d, device in enumerate(self.devices):
                for t, title in enumerate(self.titles):
                    base = logit(title.base_rate)
                    for v, variant in enumerate(title.variants):
                        log_odds = (
                            base
                            + appeal[title.id, variant.id]
                            + _liking(prefers["segments"][segment.name], variant.traits)
                            + _liking(prefers["devices"][device.name], variant.traits)
                        )
                        # expit, unlike 1 / (1 + exp(-x)), never overflows.
                        rates[s, d, t, v] = expit(log_odds)
        return rates


def _liking(prefers: Mapping[str, float], traits: Mapping[str, Trait]) -> float:
    total = 0.0
    for key, weight in prefers.items():
        name, sep, wanted = key.partition("=")
        value = traits.get(name)
        if sep:
            total += weight * (str(value).lower() == wanted.lower() if value is not None else 0)
        elif isinstance(value, int | float):  # booleans count as 0 or 1
            total += weight * float(value)
    return total


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "world"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_world(data: Any) -> World:
    try:
        return World.model_validate(data)
    except ValidationError as error:
        raise WorldError(f"invalid world: {_describe(error)}") from None


def load_world(path: Path | str | None = None) -> World:
    """The world in `path` (.json or .toml), or the default world shipped with keyart."""
    if path is None:
        text = resources.files("bandit").joinpath("worlds/default.json").read_text()
        return parse_world(json.loads(text))
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise WorldError(f"cannot read world file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise WorldError(f"world file {path} is not UTF-8 text") from None
    kind = path.suffix[1:] or "JSON"
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise WorldError(f"world file {path} is not valid {kind}: {error}") from None
    except RecursionError:
        raise WorldError(f"world file {path} is not valid {kind}: nested too deeply") from None
    return parse_world(data)

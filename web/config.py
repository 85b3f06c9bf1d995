"""keyart's configuration: one typed object built from `KEYART_*` environment variables.

Every setting is parsed and checked here, at start-up, so a typo stops the process with a
message naming the variable instead of surfacing later as a confusing failure.
"""

from __future__ import annotations

import contextlib
import hmac
import math
import os
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from artwork.embedding import BACKBONES
from artwork.ingest import IngestLimits
from artwork.pipeline import PipelineConfig
from artwork.renditions import DEFAULT_PRESETS, Preset, parse_presets
from artwork.store import BlobStore, S3Location, open_store
from bandit.config import (
    DEFAULT_EXPLORATION,
    DEFAULT_EXPLORATION_ARGS,
    DEFAULT_VW_ARGS,
    ExplorationConfig,
    FeatureConfig,
    compose_vw_args,
)
from bandit.rewards import RewardConfig

# Bounds of KEYART_POLICY_POLL and KEYART_LEARN_INTERVAL, in seconds.
MIN_INTERVAL = 0.05
MAX_INTERVAL = 24 * 3600.0
# (backend, driver) pairs keyart runs on: the URL schemes sqlite:// and postgresql+psycopg://.
DATABASE_DRIVERS = {("sqlite", "pysqlite"), ("postgresql", "psycopg")}
# Longest reward window: datetimes a window further back than this overflow soon after.
MAX_REWARD_WAIT = 365 * 24 * 3600.0


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Settings:
    var_dir: Path = Path("var")
    database_url: str = ""
    media_dir: Path = Path()
    # `s3://bucket/prefix`: media in an S3-compatible bucket instead of `media_dir`.
    media_url: str = ""
    # Where browsers fetch renditions from (a CDN or the bucket's website), if not /media/.
    media_public_url: str = ""
    secret_key: str = ""
    # Where the key came from: "environment", "file" (KEYART_SECRET_KEY_FILE), "generated"
    # (made once into the var directory: one host's own) or "given" (code building Settings).
    key_origin: str = "given"
    # Seconds within which a standby learner takes over from a leader that died.
    learner_takeover_seconds: float = 30.0
    log_level: str = "INFO"
    # Seconds a decision waits for its rewards before the learner scores it (Personalizer's
    # default reward wait was ten minutes).
    reward_wait: float = 600.0
    vw_args: str = DEFAULT_VW_ARGS
    # Largest upload accepted, in bytes; Flask refuses longer bodies before reading them.
    max_upload_bytes: int = 25 * 1024 * 1024
    # How often a serving process looks for a newer policy snapshot, and the learner for work.
    policy_poll_seconds: float = 5.0
    learn_interval_seconds: float = 10.0
    # Reward per event type; a decision's reward is their sum clipped to [0, 1].
    presets: tuple[Preset, ...] = DEFAULT_PRESETS
    reward_values: Mapping[str, float] = field(
        default_factory=lambda: {"click": 1.0, "play": 1.0, "impression": 0.0}
    )
    # Uploads over this many pixels (from the header) or with a shorter side are refused.
    max_pixels: int = 50_000_000
    min_side: int = 200
    # An operator-provided torchvision state dict; its backbone's embedding is stored per
    # variant. None: no embedding.
    embedding_weights: Path | None = None
    embedding_backbone: str = "resnet18"
    # Uploads are processed in a child process (so a web worker never loads torch, and a
    # decoder crash or hang costs the child), given this many seconds before they are refused.
    isolate_pipeline: bool = True
    pipeline_timeout: float = 60.0
    # Each serving process (a gunicorn worker) runs on one CPU of its own (`web._one_cpu`).
    pin_workers: bool = True
    # How a decision's event worths combine: "sum" (clipped to 1) or "max".
    reward_aggregation: str = "sum"
    # Least probability any active variant is served with (see bandit.config). 1%: with five
    # variants at most 5% of traffic goes to the floor beyond VW's own exploration, which
    # keeps the simulator's keyart within its regret budget (issue 5's quality test).
    probability_floor: float = DEFAULT_EXPLORATION.floor
    # The floor decays towards this as a title's learned examples grow (None: no decay),
    # halfway there after `floor_decay_examples` (see bandit.config.ExplorationConfig).
    probability_floor_min: float | None = DEFAULT_EXPLORATION.floor_min
    floor_decay_examples: int = DEFAULT_EXPLORATION.floor_decay_examples
    # Days of log a new policy lineage is trained from; 0: the whole log.
    retrain_days: float = 14.0
    # The learner runs `keyart optimize` itself: at most once per interval, and only after
    # this many decisions have been learned since the last run.
    auto_optimize: bool = False
    optimize_interval_seconds: float = 86_400.0
    optimize_min_events: int = 20_000
    # Learned examples per title below which the editor's default is served (apprentice).
    apprentice_examples: int = DEFAULT_EXPLORATION.apprentice_examples
    # How long a viewer (`user` key) keeps the same draw for a title.
    sticky_period_seconds: float = DEFAULT_EXPLORATION.sticky_period_seconds
    # Decisions one group commit may carry; requests beyond it wait for the next commit.
    decision_commit_max: int = 2000
    # Seconds the decision log's writer lets more requests join a commit when the last one
    # was shared (under load: more decisions per commit, at most this much more latency; it
    # stops waiting once as many wait as shared the last). The same on both databases: on
    # SQLite too, 2 ms served more single titles than none (benchmarks/README.md).
    decision_commit_delay: float = 0.002
    # Seconds a decision request waits for the catalog and the log before it is answered
    # from the process's last catalog snapshot instead (`"mode": "fallback"`, not logged).
    decision_timeout: float = 0.5
    # Seconds the learner waits past the reward window for in-flight writes to commit
    # (KEYART_REWARD_SETTLE defaults to 5; 0 here so code building Settings joins exactly).
    reward_settle: float = 0.0

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{(self.var_dir / 'keyart.db').resolve()}"
            )
        if self.media_dir == Path():
            object.__setattr__(self, "media_dir", self.var_dir / "media")
        # Absolute from here on: Flask resolves relative file paths against its package.
        object.__setattr__(self, "var_dir", Path(self.var_dir).resolve())
        object.__setattr__(self, "media_dir", Path(self.media_dir).resolve())
        # Written as `not (low <= x <= high)`, so NaN (false in every comparison) fails too.
        if not (0 <= self.reward_wait <= MAX_REWARD_WAIT):
            raise ConfigError(
                f"KEYART_REWARD_WAIT must be from 0 to {MAX_REWARD_WAIT:.0f} seconds (a year)"
            )
        if self.max_upload_bytes <= 0:
            raise ConfigError("KEYART_MAX_UPLOAD_BYTES must be a positive number of bytes")
        # Under the least interval the poller and the learner would spin; over a day, a new
        # policy or a decision's reward would wait longer than anyone means to.
        if not (MIN_INTERVAL <= self.policy_poll_seconds <= MAX_INTERVAL):
            raise ConfigError(
                f"KEYART_POLICY_POLL must be from {MIN_INTERVAL:g} to {MAX_INTERVAL:g} seconds"
            )
        if not (MIN_INTERVAL <= self.learn_interval_seconds <= MAX_INTERVAL):
            raise ConfigError(
                f"KEYART_LEARN_INTERVAL must be from {MIN_INTERVAL:g} to {MAX_INTERVAL:g} seconds"
            )
        if "--cb_explore_adf" not in shlex.split(self.vw_args):
            raise ConfigError("KEYART_VW_ARGS must include --cb_explore_adf")
        if self.max_pixels <= 0:
            raise ConfigError("KEYART_MAX_PIXELS must be a positive number of pixels")
        if not 1 <= self.min_side <= 10_000 or self.min_side**2 > self.max_pixels:
            raise ConfigError(
                "KEYART_MIN_SIDE must be a positive number of pixels, its square within "
                "KEYART_MAX_PIXELS"
            )
        # An upload request waits this long for its pipeline: an hour is already far too long.
        if not (0 < self.pipeline_timeout <= 3600):
            raise ConfigError("KEYART_PIPELINE_TIMEOUT must be over 0 and at most 3600 seconds")
        if self.embedding_backbone not in BACKBONES:
            raise ConfigError(
                f"KEYART_EMBEDDING_BACKBONE must be one of {', '.join(sorted(BACKBONES))}, "
                f"got {self.embedding_backbone!r}"
            )
        if self.embedding_weights is not None and not Path(self.embedding_weights).is_file():
            raise ConfigError(
                f"KEYART_EMBEDDING_WEIGHTS names {str(self.embedding_weights)!r}, "
                "which is not a readable file"
            )
        if self.reward_aggregation not in ("sum", "max"):
            raise ConfigError("KEYART_REWARD_AGGREGATION must be 'sum' or 'max'")
        if not (0 <= self.reward_settle <= 3600):
            raise ConfigError("KEYART_REWARD_SETTLE must be from 0 to 3600 seconds")
        if self.decision_commit_max < 1:
            raise ConfigError("KEYART_DECISION_COMMIT_MAX must be at least 1")
        if not (0 <= self.decision_commit_delay <= 1):
            raise ConfigError("KEYART_DECISION_COMMIT_DELAY must be from 0 to 1 second")
        # Under 10 ms a busy but healthy database would be taken for an outage.
        if not (0.01 <= self.decision_timeout <= 60):
            raise ConfigError("KEYART_DECISION_TIMEOUT must be from 0.01 to 60 seconds")
        if not (0.0 <= self.probability_floor < 0.5):
            raise ConfigError("KEYART_PROBABILITY_FLOOR must be at least 0 and below 0.5")
        if self.probability_floor_min is not None and not (
            0.0 <= self.probability_floor_min <= self.probability_floor
        ):
            raise ConfigError(
                "KEYART_PROBABILITY_FLOOR_MIN must be at least 0 and at most "
                "KEYART_PROBABILITY_FLOOR"
            )
        if not (1 <= self.floor_decay_examples <= 10**9):
            raise ConfigError("KEYART_FLOOR_DECAY_EXAMPLES must be from 1 to 1,000,000,000")
        if not (60 <= self.optimize_interval_seconds <= 365 * 86_400):
            raise ConfigError("KEYART_OPTIMIZE_INTERVAL must be from 60 seconds to a year")
        if self.optimize_min_events < 0:
            raise ConfigError("KEYART_OPTIMIZE_MIN_EVENTS must be zero or more")
        if not (0 <= self.retrain_days <= 3650):
            raise ConfigError("KEYART_RETRAIN_DAYS must be from 0 (the whole log) to 3650 days")
        if self.apprentice_examples < 0:
            raise ConfigError("KEYART_APPRENTICE_EXAMPLES must be zero or more")
        # The draw's seed counts periods since 1970: a tiny period overflows that count.
        if not (1 <= self.sticky_period_seconds < math.inf):
            raise ConfigError("KEYART_STICKY_PERIOD must be a finite number of seconds, at least 1")
        if not (1 <= self.learner_takeover_seconds <= 3600):
            raise ConfigError("KEYART_LEARNER_TAKEOVER must be from 1 to 3600 seconds")
        if self.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("KEYART_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        _check_directory("KEYART_VAR_DIR", self.var_dir)
        _check_directory("KEYART_MEDIA_DIR", self.media_dir)
        _check_database_url(self.database_url)
        if self.media_url:
            try:
                S3Location.parse(self.media_url)
            except ValueError as error:
                raise ConfigError(f"KEYART_MEDIA_URL {error}") from None
        if self.media_public_url:
            object.__setattr__(self, "media_public_url", _public_url(self.media_public_url))

    @property
    def on_postgresql(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "postgresql"

    def require_shared_secret(self) -> None:
        """Raise unless every host can share this secret key: on PostgreSQL (several hosts
        on one database) a key generated into this host's var directory would split viewers'
        sticky draws and hashes, and studio sign-ins, between hosts."""
        if self.on_postgresql and self.key_origin == "generated":
            raise ConfigError(
                "KEYART_SECRET_KEY (or KEYART_SECRET_KEY_FILE) must be set on PostgreSQL: "
                "every host serving one database must share the same secret key, and one "
                "generated here would be this host's alone"
            )

    def blob_store(self) -> BlobStore:
        """The media store these settings name: the S3 bucket, else the local directory."""
        return open_store(self.media_url, self.media_dir)

    @property
    def media_prefix(self) -> str:
        """What a rendition's key is appended to in the image URLs answered to clients."""
        return f"{self.media_public_url}/" if self.media_public_url else "/media/"

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        return replace(self, **overrides)

    @property
    def ingest_limits(self) -> IngestLimits:
        return IngestLimits(
            max_bytes=self.max_upload_bytes, max_pixels=self.max_pixels, min_side=self.min_side
        )

    def pipeline_config(self) -> PipelineConfig:
        """How uploads are decoded, rendered and measured under these settings."""
        return PipelineConfig(
            presets=self.presets,
            limits=self.ingest_limits,
            embedding_weights=self.embedding_weights,
            embedding_backbone=self.embedding_backbone,
        )

    def reward_config(self) -> RewardConfig:
        return RewardConfig(
            dict(self.reward_values),
            self.reward_wait,
            self.reward_aggregation,
            self.reward_settle,
        )

    def exploration(self) -> ExplorationConfig:
        return ExplorationConfig(
            floor=self.probability_floor,
            apprentice_examples=self.apprentice_examples,
            sticky_period_seconds=self.sticky_period_seconds,
            floor_min=self.probability_floor_min,
            floor_decay_examples=self.floor_decay_examples,
            # Derived, not the key itself: the viewer hashes must not help anyone forge a
            # studio session, whatever is learned from them.
            viewer_key=hmac.digest(self.secret_key.encode(), b"keyart viewer keys", "sha256"),
        )


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value


def _presets(env: Mapping[str, str]) -> tuple[Preset, ...]:
    raw = env.get("KEYART_PRESETS", "")
    if not raw.strip():
        return DEFAULT_PRESETS
    try:
        return parse_presets(raw)
    except ValueError as error:
        raise ConfigError(
            f"KEYART_PRESETS: {error} (expected e.g. 'boxart=2:3@342,684;square=1:1@400')"
        ) from None


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true or false), got {raw!r}")


def _check_directory(name: str, path: Path) -> None:
    """Raise unless `path` is a directory, or could be made one: a regular file there (or
    where a parent should be) would fail only later, at the first write under it."""
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                raise ConfigError(f"{name}: {str(existing)!r} is a file, not a directory")
            return


def _check_database_url(url: str) -> None:
    """Raise unless `url` names a database keyart runs on, through a driver that loads: the
    decision log and the pool are written for pysqlite and psycopg 3 (not psycopg2, nor an
    asyncio driver, which would fail only at the first query)."""
    name = "KEYART_DATABASE_URL"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"{name} is not a database URL") from None
    wrong = f"{name} must be an sqlite:/// or postgresql+psycopg:// URL, got {parsed.drivername!r}"
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(wrong)
    try:
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except (NoSuchModuleError, ImportError) as error:
        raise ConfigError(
            f"{name}: the {parsed.drivername!r} driver cannot be loaded: {error}"
        ) from None
    if (dialect.name, dialect.driver) not in DATABASE_DRIVERS or dialect.is_async:
        raise ConfigError(wrong)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(parsed.database)
        if database.is_dir():
            raise ConfigError(f"{name}: {parsed.database!r} is a directory, not a database file")
        _check_directory(name, database.parent)


def _public_url(url: str) -> str:
    """KEYART_MEDIA_PUBLIC_URL: an absolute http(s) URL, without a trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"KEYART_MEDIA_PUBLIC_URL must be an absolute http:// or https:// URL, got {url!r}"
        )
    if parts.query or parts.fragment:
        raise ConfigError("KEYART_MEDIA_PUBLIC_URL must not have a query or a fragment")
    return url.rstrip("/")


# Shortest secret key accepted, from KEYART_SECRET_KEY or the key file.
MIN_SECRET_KEY_LENGTH = 16


def _secret_key(env: Mapping[str, str], var_dir: Path) -> tuple[str, str]:
    """KEYART_SECRET_KEY, or the key in KEYART_SECRET_KEY_FILE, or one generated once and
    kept in the var directory; and which of the three it is."""
    key = env.get("KEYART_SECRET_KEY", "")
    key_file = env.get("KEYART_SECRET_KEY_FILE", "")
    if key and key_file:
        raise ConfigError("set KEYART_SECRET_KEY or KEYART_SECRET_KEY_FILE, not both")
    if key:
        if len(key) < MIN_SECRET_KEY_LENGTH:
            raise ConfigError(
                f"KEYART_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters"
            )
        return key, "environment"
    if key_file:
        path = Path(key_file)
        if not path.is_file():
            raise ConfigError(f"KEYART_SECRET_KEY_FILE names {key_file!r}, which is not a file")
        return _read_secret_key(path, generated=False), "file"
    path = var_dir / "secret_key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        _write_secret_key(path)
    return _read_secret_key(path), "generated"


def _write_secret_key(path: Path) -> None:
    """Make a key at `path`, readable by its owner only from the start, unless another
    process starting at the same time made one first (whose key is then the one)."""
    # Written in full under a name of its own, then linked: `path` never holds a partial key.
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(32))
            file.flush()
            os.fsync(file.fileno())
        # Should another process have made one first, its key is the one.
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink()


def _read_secret_key(path: Path, generated: bool = True) -> str:
    # Refused rather than tightened: a key others could read may already be copied, and
    # anyone holding it can sign a studio session. Whether to keep it is the operator's call.
    mode = path.stat().st_mode
    if mode & 0o077:
        remedy = (
            ", or delete it to have a new key made (which signs every editor out of the studio)"
            if generated
            else ""
        )
        raise ConfigError(
            f"the secret key file {str(path)!r} is open to other users (mode {mode & 0o777:o}): "
            f"make it readable by its owner only (chmod 600){remedy}"
        )
    key = path.read_text().strip()
    if len(key) < MIN_SECRET_KEY_LENGTH:
        remedy = (
            "delete the file to have a new key made, or set KEYART_SECRET_KEY"
            if generated
            else "write a longer one (the same on every host)"
        )
        raise ConfigError(
            f"the secret key in {str(path)!r} is shorter than {MIN_SECRET_KEY_LENGTH} "
            f"characters: {remedy}"
        )
    return key


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from the environment; raise `ConfigError` naming any bad variable."""
    env = os.environ if env is None else env
    var_dir = Path(env.get("KEYART_VAR_DIR") or "var")
    url = env.get("KEYART_DATABASE_URL", "")
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver we ship; SQLAlchemy's bare scheme means psycopg2.
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # Before the secret key, which may be written there.
    _check_directory("KEYART_VAR_DIR", var_dir)
    media = env.get("KEYART_MEDIA_DIR")
    secret_key, key_origin = _secret_key(env, var_dir)
    return Settings(
        var_dir=var_dir,
        database_url=url,
        media_dir=Path(media) if media else Path(),
        media_url=(env.get("KEYART_MEDIA_URL") or "").strip(),
        media_public_url=(env.get("KEYART_MEDIA_PUBLIC_URL") or "").strip(),
        secret_key=secret_key,
        key_origin=key_origin,
        learner_takeover_seconds=_number(env, "KEYART_LEARNER_TAKEOVER", 30.0),
        log_level=(env.get("KEYART_LOG_LEVEL") or "INFO").strip().upper(),
        reward_wait=_number(env, "KEYART_REWARD_WAIT", 600.0),
        max_upload_bytes=_integer(env, "KEYART_MAX_UPLOAD_BYTES", 25 * 1024 * 1024),
        policy_poll_seconds=_number(env, "KEYART_POLICY_POLL", 5.0),
        learn_interval_seconds=_number(env, "KEYART_LEARN_INTERVAL", 10.0),
        presets=_presets(env),
        max_pixels=_integer(env, "KEYART_MAX_PIXELS", 50_000_000),
        min_side=_integer(env, "KEYART_MIN_SIDE", 200),
        embedding_weights=Path(env["KEYART_EMBEDDING_WEIGHTS"])
        if env.get("KEYART_EMBEDDING_WEIGHTS")
        else None,
        embedding_backbone=env.get("KEYART_EMBEDDING_BACKBONE") or "resnet18",
        isolate_pipeline=_flag(env, "KEYART_PIPELINE_ISOLATION", True),
        pipeline_timeout=_number(env, "KEYART_PIPELINE_TIMEOUT", 60.0),
        pin_workers=_flag(env, "KEYART_PIN_WORKERS", True),
        **_decision_settings(env),
    )


def _reward_values(env: Mapping[str, str]) -> dict[str, float]:
    """KEYART_REWARD_VALUES: `click=1,play=1,impression=0` (impression must be named)."""
    raw = env.get("KEYART_REWARD_VALUES", "")
    if not raw.strip():
        return {"click": 1.0, "play": 1.0, "impression": 0.0}
    values: dict[str, float] = {}
    for item in raw.split(","):
        kind, sep, number = item.partition("=")
        kind = kind.strip()
        if not sep or not kind or not kind.replace("_", "").isalnum() or len(kind) > 32:
            raise ConfigError(f"KEYART_REWARD_VALUES: {item.strip()!r} is not TYPE=NUMBER")
        try:
            value = float(number)
        except ValueError:
            raise ConfigError(f"KEYART_REWARD_VALUES: {number.strip()!r} is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"KEYART_REWARD_VALUES: {kind} must be finite")
        values[kind] = value
    if "impression" not in values:
        raise ConfigError("KEYART_REWARD_VALUES must give a value for 'impression'")
    return values


def _floor_min(env: Mapping[str, str]) -> float:
    """KEYART_PROBABILITY_FLOOR_MIN, by default 0.1% (or the floor, if that is lower)."""
    floor = _number(env, "KEYART_PROBABILITY_FLOOR", DEFAULT_EXPLORATION.floor)
    default = min(floor, DEFAULT_EXPLORATION.floor_min or floor)
    return _number(env, "KEYART_PROBABILITY_FLOOR_MIN", default)


def _vw_args(env: Mapping[str, str]) -> str:
    """KEYART_VW_ARGS (exploration) + KEYART_INTERACTIONS + KEYART_HASH_BITS, checked by
    starting a VW workspace with them, so a typo fails start-up rather than the first request."""
    import vowpal_wabbit_next as vw

    try:
        interactions = FeatureConfig.parse_interactions(
            env.get("KEYART_INTERACTIONS") or "context*action,slot*action"
        )
    except ValueError as error:
        raise ConfigError(f"KEYART_INTERACTIONS: {error}") from None
    try:
        features = FeatureConfig(interactions, _integer(env, "KEYART_HASH_BITS", 18))
    except ValueError as error:
        raise ConfigError(f"KEYART_HASH_BITS/KEYART_INTERACTIONS: {error}") from None
    try:
        args = compose_vw_args(env.get("KEYART_VW_ARGS") or DEFAULT_EXPLORATION_ARGS, features)
    except ValueError as error:
        raise ConfigError(f"KEYART_VW_ARGS {error}") from None
    try:
        vw.Workspace(shlex.split(args))
    except RuntimeError as error:
        raise ConfigError(f"KEYART_VW_ARGS is rejected by VW: {error}") from None
    return args


def _decision_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """The decision engine's settings (issue 4), parsed and named for errors."""
    return {
        "vw_args": _vw_args(env),
        "reward_values": _reward_values(env),
        "reward_aggregation": (env.get("KEYART_REWARD_AGGREGATION") or "sum").strip(),
        "probability_floor": _number(env, "KEYART_PROBABILITY_FLOOR", DEFAULT_EXPLORATION.floor),
        "probability_floor_min": _floor_min(env),
        "floor_decay_examples": _integer(env, "KEYART_FLOOR_DECAY_EXAMPLES", 5000),
        "retrain_days": _number(env, "KEYART_RETRAIN_DAYS", 14.0),
        "auto_optimize": _flag(env, "KEYART_AUTO_OPTIMIZE", False),
        "optimize_interval_seconds": _number(env, "KEYART_OPTIMIZE_INTERVAL", 86_400.0),
        "optimize_min_events": _integer(env, "KEYART_OPTIMIZE_MIN_EVENTS", 20_000),
        "apprentice_examples": _integer(env, "KEYART_APPRENTICE_EXAMPLES", 200),
        "sticky_period_seconds": _number(env, "KEYART_STICKY_PERIOD", 7 * 24 * 3600.0),
        "decision_commit_max": _integer(env, "KEYART_DECISION_COMMIT_MAX", 2000),
        "decision_commit_delay": _number(env, "KEYART_DECISION_COMMIT_DELAY", 0.002),
        "decision_timeout": _number(env, "KEYART_DECISION_TIMEOUT", 0.5),
        "reward_settle": _number(env, "KEYART_REWARD_SETTLE", 5.0),
    }


# The learning settings `PUT /api/v1/policy` may store, by the environment variable each
# stands in for; stored ones win over the environment's (`learning_settings`).
POLICY_FIELDS = {
    "vw_args": "KEYART_VW_ARGS",
    "interactions": "KEYART_INTERACTIONS",
    "hash_bits": "KEYART_HASH_BITS",
    "reward_values": "KEYART_REWARD_VALUES",
    "reward_aggregation": "KEYART_REWARD_AGGREGATION",
}


def learning_settings(
    settings: Settings, stored: Mapping[str, str] | None, env: Mapping[str, str] | None = None
) -> tuple[str, RewardConfig]:
    """The VW arguments and reward rules to learn with: the environment's (as `settings`
    holds them), unless settings were stored through the API, which are read over the
    environment and checked exactly as it is (ConfigError naming the variable)."""
    if not stored:
        return settings.vw_args, settings.reward_config()
    merged = {**(os.environ if env is None else env), **stored}
    vw_args = _vw_args(merged)
    try:
        rewards = RewardConfig(
            _reward_values(merged),
            settings.reward_wait,
            (merged.get("KEYART_REWARD_AGGREGATION") or "sum").strip(),
            settings.reward_settle,
        )
    except ValueError as error:
        raise ConfigError(f"KEYART_REWARD_AGGREGATION: {error}") from None
    return vw_args, rewards

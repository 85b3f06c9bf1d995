"""The artwork pipeline's settings: presets, limits and the embedding, each checked at
start-up with a message naming the variable."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from artwork.renditions import DEFAULT_PRESETS
from web.config import ConfigError, Settings, load_settings


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"KEYART_VAR_DIR": str(tmp_path), "KEYART_SECRET_KEY": "s" * 20, **values}


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(_env(tmp_path))
    assert settings.presets == DEFAULT_PRESETS
    limits = settings.ingest_limits
    assert (limits.max_bytes, limits.max_pixels, limits.min_side) == (25 << 20, 50_000_000, 200)
    assert settings.pipeline_config().embedding_weights is None
    assert settings.isolate_pipeline and settings.pipeline_timeout == 60
    inline = load_settings(_env(tmp_path, KEYART_PIPELINE_ISOLATION="0"))
    assert not inline.isolate_pipeline


def test_presets_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(_env(tmp_path, KEYART_PRESETS="poster=2:3@300;wide=21:9@1260"))
    assert [(p.name, p.width, p.height) for p in settings.presets] == [
        ("poster-300", 300, 450),
        ("wide-1260", 1260, 540),
    ]
    assert settings.pipeline_config().presets == settings.presets


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KEYART_PRESETS", "boxart=2:3"),
        ("KEYART_PRESETS", "boxart=2:3@100000"),
        ("KEYART_MAX_PIXELS", "lots"),
        ("KEYART_MAX_PIXELS", "-1"),
        ("KEYART_MIN_SIDE", "0"),
        ("KEYART_MIN_SIDE", "9000"),
        ("KEYART_EMBEDDING_WEIGHTS", "/no/such/weights.pt"),
        ("KEYART_EMBEDDING_BACKBONE", "vit_h_14"),
        ("KEYART_PIPELINE_ISOLATION", "maybe"),
        ("KEYART_PIPELINE_TIMEOUT", "0"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(_env(tmp_path, **{name: value}))


def test_embedding_settings(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"checked when loaded")
    settings = load_settings(
        _env(
            tmp_path,
            KEYART_EMBEDDING_WEIGHTS=str(weights),
            KEYART_EMBEDDING_BACKBONE="mobilenet_v3_small",
        )
    )
    config = settings.pipeline_config()
    assert (config.embedding_weights, config.embedding_backbone) == (weights, "mobilenet_v3_small")


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        # NaN is false in every comparison: `x <= 0`-style checks let it through.
        ("policy_poll_seconds", math.nan, "KEYART_POLICY_POLL"),
        ("learn_interval_seconds", math.nan, "KEYART_LEARN_INTERVAL"),
        ("pipeline_timeout", math.nan, "KEYART_PIPELINE_TIMEOUT"),
        ("sticky_period_seconds", math.nan, "KEYART_STICKY_PERIOD"),
        ("reward_wait", math.nan, "KEYART_REWARD_WAIT"),
        ("reward_settle", math.nan, "KEYART_REWARD_SETTLE"),
        ("decision_commit_delay", math.nan, "KEYART_DECISION_COMMIT_DELAY"),
        ("probability_floor", math.nan, "KEYART_PROBABILITY_FLOOR"),
        ("learn_interval_seconds", 0.0, "KEYART_LEARN_INTERVAL"),
        ("pipeline_timeout", math.inf, "KEYART_PIPELINE_TIMEOUT"),
        ("sticky_period_seconds", 1e-300, "KEYART_STICKY_PERIOD"),
    ],
)
def test_settings_built_in_code_are_checked_too(
    tmp_path: Path, field: str, value: float, name: str
) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings(var_dir=tmp_path, secret_key="s" * 20, **{field: value})


def test_a_file_is_not_a_media_directory(tmp_path: Path) -> None:
    media = tmp_path / "uploads"
    media.write_text("a file")
    settings = load_settings(_env(tmp_path))
    with pytest.raises(ConfigError, match="KEYART_MEDIA_DIR"):
        settings.with_overrides({"media_dir": media})
    with pytest.raises(ConfigError, match="KEYART_MEDIA_DIR"):
        load_settings(_env(tmp_path, KEYART_MEDIA_DIR=str(media)))


def test_a_database_driver_that_cannot_be_loaded_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://keyart@db.example/keyart"
    assert load_settings(_env(tmp_path, KEYART_DATABASE_URL=url)).database_url == url
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    with pytest.raises(ConfigError, match=r"KEYART_DATABASE_URL.*cannot be loaded"):
        load_settings(_env(tmp_path, KEYART_DATABASE_URL=url))

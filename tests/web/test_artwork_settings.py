"""The artwork pipeline's settings: presets, limits and the embedding, each checked at
start-up with a message naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from artwork.renditions import DEFAULT_PRESETS
from web.config import ConfigError, load_settings


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

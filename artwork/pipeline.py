"""The artwork pipeline: from an upload's bytes to everything keyart keeps about it —
renditions for every preset and format, cropped around what matters; features; a
placeholder; optionally an embedding. Uploads run it for one image, `reprocess` in batches.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image

from artwork import faces as face_detection
from artwork.features import FEATURES_VERSION, image_features
from artwork.ingest import IngestLimits, decode
from artwork.renditions import DEFAULT_PRESETS, Preset, RenderedImage, render

# Faces and features are measured on a copy this long on its longest side.
ANALYSIS_SIDE = 640

# Placeholders are drawn from a copy this wide: blurhash keeps only a few components anyway.
PLACEHOLDER_SIDE = 32


@dataclass(frozen=True)
class PipelineConfig:
    presets: tuple[Preset, ...] = DEFAULT_PRESETS
    limits: IngestLimits = field(default_factory=IngestLimits)
    embedding_weights: Path | None = None
    embedding_backbone: str = "resnet18"

    def __post_init__(self) -> None:
        if not self.presets:
            raise ValueError("at least one preset is needed")

    @property
    def fingerprint(self) -> str:
        """Changes whenever what the pipeline would produce changes; stored with each
        variant so `reprocess` knows which are out of date, and can resume."""
        spec = {
            "presets": [[p.name, p.width, p.height] for p in self.presets],
            "features": FEATURES_VERSION,
            "embedding": [str(self.embedding_weights or ""), self.embedding_backbone],
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Processed:
    format: str
    width: int
    height: int
    phash: imagehash.ImageHash
    features: dict[str, Any]
    placeholder: dict[str, Any]
    focus: tuple[float, float]
    focus_source: str
    renditions: list[RenderedImage]
    embedding: list[float] | None = None


@functools.lru_cache(maxsize=2)
def _embedder(weights: Path, backbone: str) -> Any:
    from artwork.embedding import Embedder

    return Embedder(weights, backbone)


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def dominant_colour(image: Image.Image) -> str:
    """The most common of five representative colours, as `#rrggbb`."""
    small = image.copy()
    small.thumbnail((64, 64))
    quantised = small.quantize(5, method=Image.Quantize.MEDIANCUT)
    palette = quantised.getpalette() or [0, 0, 0]
    _, index = max(quantised.getcolors() or [(1, 0)])
    return _hex(palette[index * 3 : index * 3 + 3])


def blurhash_of(image: Image.Image) -> str:
    """A blurhash (the `blurhash` package's encoder) with 4 components along the longer side
    and 3 across: enough for a poster's main masses of colour in about 30 characters."""
    import blurhash

    small = image.convert("RGB")
    small.thumbnail((PLACEHOLDER_SIDE, PLACEHOLDER_SIDE))
    wide = small.width >= small.height
    return str(
        blurhash.encode(
            np.asarray(small), components_x=4 if wide else 3, components_y=3 if wide else 4
        )
    )


def placeholder_of(image: Image.Image, renditions: Sequence[RenderedImage]) -> dict[str, Any]:
    """A dominant colour for the whole picture, and a blurhash per preset of what that
    preset actually shows (each crop differs)."""
    hashes: dict[str, str] = {}
    by_aspect: dict[float, str] = {}
    for rendered in renditions:
        if rendered.preset not in hashes and rendered.fitted is not None:
            # Presets of one aspect show the same crop: one hash serves them all.
            aspect = round(rendered.width / rendered.height, 3)
            if aspect not in by_aspect:
                by_aspect[aspect] = blurhash_of(rendered.fitted)
            hashes[rendered.preset] = by_aspect[aspect]
    return {"color": dominant_colour(image), "blurhash": hashes}


@dataclass(frozen=True)
class Prepared:
    """An upload decoded and looked at, not yet rendered: enough to refuse a duplicate."""

    format: str
    width: int
    height: int
    image: Image.Image
    analysis: Image.Image
    faces: list[face_detection.Face]
    phash: imagehash.ImageHash
    editor_focus: tuple[float, float] | None


def prepare(
    data: bytes, config: PipelineConfig, editor_focus: tuple[float, float] | None = None
) -> Prepared:
    """Decode an upload (raising `ArtworkError`s), find its faces and its perceptual hash."""
    decoded = decode(data, config.limits, config.presets)
    analysis = decoded.image.copy()
    analysis.thumbnail((ANALYSIS_SIDE, ANALYSIS_SIDE), Image.Resampling.BILINEAR)
    return Prepared(
        format=decoded.format,
        width=decoded.width,
        height=decoded.height,
        image=decoded.image,
        analysis=analysis,
        faces=face_detection.detect_faces(analysis),
        phash=imagehash.phash(analysis),
        editor_focus=editor_focus,
    )


def finish(batch: Sequence[Prepared], config: PipelineConfig) -> list[Processed]:
    """Render, measure and embed a batch of prepared uploads; features are computed for the
    whole batch at once."""
    features = image_features([p.analysis for p in batch], [p.faces for p in batch])
    embeddings: Sequence[list[float] | None] = [None] * len(batch)
    if config.embedding_weights is not None:
        embedder = _embedder(config.embedding_weights, config.embedding_backbone)
        embeddings = embedder.embed([p.analysis for p in batch])
    out = []
    for prepared, stats, vector in zip(batch, features, embeddings, strict=True):
        focus, source = face_detection.choose_focus(
            prepared.analysis, prepared.faces, prepared.editor_focus
        )
        renditions = render(prepared.image, config.presets, focus)
        out.append(
            Processed(
                format=prepared.format,
                width=prepared.width,
                height=prepared.height,
                phash=prepared.phash,
                features=stats,
                placeholder=placeholder_of(prepared.analysis, renditions),
                focus=(round(float(focus[0]), 4), round(float(focus[1]), 4)),
                focus_source=source,
                renditions=renditions,
                embedding=vector,
            )
        )
    return out


def process(
    data: bytes, config: PipelineConfig, editor_focus: tuple[float, float] | None = None
) -> Processed:
    """The whole pipeline for one upload."""
    return finish([prepare(data, config, editor_focus)], config)[0]

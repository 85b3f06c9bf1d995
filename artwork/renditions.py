"""Renditions: each variant resized and cropped for every preset, in every format.

Presets are named `<group>-<width>` (`boxart-342`); a group shares one aspect ratio. They
come from configuration as text like `boxart=2:3@342,684;square=1:1@400`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Preset:
    """A named output shape: `boxart-342` is 342×513 (2:3)."""

    name: str
    width: int
    height: int

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"preset name {self.name!r} must be letters, digits, '-' or '_'")
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise ValueError(f"preset {self.name!r} must be 16..4096 pixels on each side")

    @property
    def group(self) -> str:
        """The preset's family (`boxart` for `boxart-342`), which shares one aspect."""
        return self.name.rsplit("-", 1)[0]


_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

# 2:3 posters at phone and tablet/TV widths; 16:9 billboards up to full HD; one square.
DEFAULT_PRESETS_SPEC = "boxart=2:3@342,684;billboard=16:9@640,1280,1920;square=1:1@400"

_GROUP = re.compile(r"([A-Za-z][A-Za-z0-9_]{0,40})=(\d{1,3}):(\d{1,3})@(\d{1,4}(?:,\d{1,4})*)")


def parse_presets(spec: str) -> tuple[Preset, ...]:
    """Presets from `group=W:H@width,width;...`; raises ValueError saying what is wrong.

    >>> [p.name for p in parse_presets("boxart=2:3@342,684")]
    ['boxart-342', 'boxart-684']
    >>> parse_presets("boxart=2:3@342")[0].height
    513
    """
    presets: list[Preset] = []
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        match = _GROUP.fullmatch(part.replace(" ", ""))
        if match is None:
            raise ValueError(f"{part!r} is not of the form name=W:H@width[,width...]")
        group, aspect_w, aspect_h, widths = match.groups()
        if int(aspect_w) == 0 or int(aspect_h) == 0:
            raise ValueError(f"{part!r}: the aspect ratio needs two positive numbers")
        for width in widths.split(","):
            w = int(width)
            presets.append(Preset(f"{group}-{w}", w, round(w * int(aspect_h) / int(aspect_w))))
    if not presets:
        raise ValueError("no presets given")
    names = [p.name for p in presets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"preset {duplicates[0]!r} is given twice")
    return tuple(presets)


DEFAULT_PRESETS: tuple[Preset, ...] = parse_presets(DEFAULT_PRESETS_SPEC)

# Preferred first when a client accepts several.
FORMATS = ("avif", "webp", "jpg")

# Quality for artwork viewed at 1x-2x, where posters are flat areas, faces and type:
# - AVIF 55: at this level libaom keeps faces and edges of title type clean, at about a third
#   of JPEG 85's bytes; speed 8 keeps encoding an upload near WebP's time (6+ is where
#   libaom's encode time drops by an order of magnitude with a few % larger files).
# - WebP 80 with method 4: libwebp's default effort; 80 is where its blocking on gradients
#   stops being visible, at about half of JPEG 85.
# - JPEG 85 progressive, optimised Huffman: the fallback every client decodes; 85 is past
#   the knee of libjpeg's size/quality curve, 4:2:0 chroma as every photo pipeline uses.
_ENCODE = {
    "avif": ("AVIF", {"quality": 55, "speed": 8}),
    "webp": ("WEBP", {"quality": 80, "method": 4}),
    "jpg": ("JPEG", {"quality": 85, "optimize": True, "progressive": True}),
}


@dataclass(frozen=True)
class RenderedImage:
    preset: str
    format: str
    width: int
    height: int
    data: bytes
    # The fitted pixels before encoding, small enough to draw a placeholder from.
    fitted: Image.Image | None = None


def working_size(width: int, height: int, presets: Sequence[Preset]) -> tuple[int, int]:
    """The smallest size of a `width`×`height` image from which every preset can be cut
    without upscaling (or the full size, where a preset needs more than there is)."""
    scale = max(max(p.width / width, p.height / height) for p in presets)
    scale = min(scale, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def crop_box(
    size: tuple[int, int], aspect: float, focus: tuple[float, float]
) -> tuple[int, int, int, int]:
    """The largest box of `aspect` (width/height) inside `size`, centred on `focus` (0..1)
    where the edges allow, else pushed against the nearest edge."""
    width, height = size
    if width / height > aspect:
        box_w, box_h = round(height * aspect), height
    else:
        box_w, box_h = width, round(width / aspect)
    left = min(max(round(focus[0] * width - box_w / 2), 0), width - box_w)
    top = min(max(round(focus[1] * height - box_h / 2), 0), height - box_h)
    return left, top, left + box_w, top + box_h


def crop_to(image: Image.Image, preset: Preset, focus: tuple[float, float]) -> Image.Image:
    """Resize and crop `image` to the preset, the crop centred on `focus` where it can be."""
    box = crop_box(image.size, preset.width / preset.height, focus)
    # Resizing with a box crops and scales in one pass; reducing_gap lets Pillow shrink by
    # whole factors first, which is much faster with no visible difference.
    return image.resize(
        (preset.width, preset.height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0
    )


def encode(image: Image.Image, fmt: str) -> bytes:
    name, options = _ENCODE[fmt]
    buffer = io.BytesIO()
    # No exif/icc/xmp arguments: nothing but pixels goes into what keyart writes.
    image.save(buffer, name, **options)
    return buffer.getvalue()


def render(
    image: Image.Image,
    presets: Sequence[Preset],
    focus: tuple[float, float] = (0.5, 0.5),
    formats: Sequence[str] = FORMATS,
) -> list[RenderedImage]:
    """Every preset in every format. Presets of one aspect ratio share one crop: the largest
    is cut from `image` around `focus`, the smaller ones are scaled from it, which is the
    same picture for a fraction of the resampling work."""
    fitted: dict[str, Image.Image] = {}
    largest_of_aspect: dict[float, Image.Image] = {}
    for preset in sorted(presets, key=lambda p: p.width * p.height, reverse=True):
        aspect = round(preset.width / preset.height, 3)
        source = largest_of_aspect.get(aspect)
        if source is None:
            fitted[preset.name] = largest_of_aspect[aspect] = crop_to(image, preset, focus)
        else:
            fitted[preset.name] = crop_to(source, preset, (0.5, 0.5))
    return [
        RenderedImage(
            preset.name,
            fmt,
            preset.width,
            preset.height,
            encode(fitted[preset.name], fmt),
            fitted[preset.name],
        )
        for preset in presets
        for fmt in formats
    ]

"""Safe decoding of uploads: decide the format from the bytes, refuse what is too big
before decoding pixels, and hand back one clean sRGB image with no metadata.

Decoding is told the smallest size the renditions need, so a 24-megapixel JPEG is decoded
at reduced scale by libjpeg itself (`Image.draft`) and never held at full size.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps

from artwork.errors import BadImage, TooLarge, UnsupportedImage
from artwork.renditions import Preset, working_size

# The formats we accept, by Pillow's name, and the extension their blobs are kept under.
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "AVIF": "avif"}

# ISO-BMFF brands that mean "this is AVIF" (HEIC shares the container but not these).
_AVIF_BRANDS = {b"avif", b"avis"}

# EXIF orientations 5-8 turn the image a quarter: the stored width is the shown height.
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class IngestLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 50_000_000
    min_side: int = 200

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.min_side <= 0:
            raise ValueError("ingest limits must be positive")
        if self.min_side * self.min_side > self.max_pixels:
            raise ValueError("the minimum side cannot exceed the pixel limit")


@dataclass(frozen=True)
class Decoded:
    """An upload, decoded: `image` is RGB, upright, sRGB, metadata-free, and possibly reduced
    to `working_size` or a little more; `width`×`height` is the upright original's size."""

    image: Image.Image
    format: str
    width: int
    height: int


def _avif_brands(data: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO-BMFF `ftyp` box at the start of `data`."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return set()
    (size,) = struct.unpack(">I", data[:4])
    size = min(max(size, 16), len(data), 256)
    brands = {data[8:12]}
    brands.update(data[offset : offset + 4] for offset in range(16, size - 3, 4))
    return brands


def sniff(data: bytes) -> str | None:
    """The accepted format these bytes start like, or None. Names and declared content
    types are never consulted: they are whatever the uploader's tool said."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if _avif_brands(data) & _AVIF_BRANDS:
        return "AVIF"
    return None


def _too_many(width: int, height: int, limits: IngestLimits) -> BadImage:
    return BadImage(
        "too_many_pixels",
        f"the image is {width}×{height} pixels; the limit is {limits.max_pixels:,} pixels",
    )


def decode(data: bytes, limits: IngestLimits, presets: Sequence[Preset] = ()) -> Decoded:
    """Decode an upload into an RGB image, upright, in sRGB, first frame only.

    With `presets`, the image is decoded only as large as the largest of them needs: JPEGs
    at the smallest libjpeg scale that still covers it, and any image is reduced by whole
    factors towards it before colour conversion.

    Raises `TooLarge`, `UnsupportedImage` or `BadImage` with a message saying why.
    """
    if len(data) > limits.max_bytes:
        raise TooLarge(
            "file_too_large", f"the file is {len(data)} bytes; the limit is {limits.max_bytes}"
        )
    if not data:
        raise UnsupportedImage("unsupported_image", "the file is empty")
    kind = sniff(data)
    if kind is None:
        raise UnsupportedImage(
            "unsupported_image", "the file is not a JPEG, PNG, WebP or AVIF image"
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns before it refuses; a warning here is already too big.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                # Opening reads the header only; no pixel buffer exists yet.
                image = Image.open(io.BytesIO(data), formats=[kind])
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                # Pillow refused from the header alone; say so in our own words.
                probe = _header_size(data)
                if probe is not None:
                    raise _too_many(*probe, limits) from None
                raise BadImage(
                    "too_many_pixels", f"the image is over {limits.max_pixels:,} pixels"
                ) from None
            width, height = image.size
            # The header's size is checked before a single pixel is decoded.
            if width * height > limits.max_pixels:
                raise _too_many(width, height, limits)
            if min(width, height) < limits.min_side:
                raise BadImage(
                    "image_too_small",
                    f"the image is {width}×{height}; both sides must be at least "
                    f"{limits.min_side} pixels",
                )
            orientation = image.getexif().get(0x0112, 1)
            if orientation in _TRANSPOSED_ORIENTATIONS:
                width, height = height, width
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            need = working_size(width, height, presets) if presets else None
            if need is not None and kind == "JPEG":
                stored = need[::-1] if orientation in _TRANSPOSED_ORIENTATIONS else need
                # libjpeg decodes at 1/2, 1/4 or 1/8 directly: the cheapest big-enough one.
                image.draft("RGB", stored)
            image.load()
            return Decoded(_normalise(image, need), kind, width, height)
    except BadImage:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        struct.error,
        # libavif reports undecodable planes as RuntimeError; a lying header as MemoryError.
        RuntimeError,
        MemoryError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        # Pillow names the in-memory file it was given ("<_io.BytesIO object at 0x…>"):
        # noise to the editor, and a memory address to anyone.
        detail = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(error))
        message = f"the {kind} image cannot be decoded: {detail}"
        raise BadImage("undecodable_image", message) from None


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR, for the message when Pillow refuses to open it."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None


_SRGB = ImageCms.createProfile("sRGB")


def _to_8bit_grey(image: Image.Image) -> Image.Image:
    # 16-bit (or 32-bit integer) greyscale: keep the top 8 bits rather than clip.
    values = np.asarray(image, dtype=np.uint32 if image.mode == "I" else np.uint16)
    shift = 8 if values.max(initial=0) <= 0xFFFF else 24
    return Image.fromarray((values >> shift).astype(np.uint8), "L")


def _normalise(image: Image.Image, need: tuple[int, int] | None) -> Image.Image:
    icc = image.info.get("icc_profile")
    image = ImageOps.exif_transpose(image)
    if need is not None:
        # Reduce before colour work: everything after this is proportional to pixels.
        need_w, need_h = need
        scale = max(need_w / image.width, need_h / image.height)
        if scale < 0.5:
            image = image.reduce(max(1, int(1 / scale)))
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image = _to_8bit_grey(image)
    if image.mode in ("1", "P", "PA", "LA", "La", "RGBa") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        # Transparent areas become white, what a UI most often shows them on.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    if icc and image.mode in ("RGB", "CMYK", "RGBA", "L"):
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            image = ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # an unreadable profile: fall back to treating the pixels as sRGB
    rgb = image.convert("RGB")
    # A fresh image carries no EXIF, XMP, ICC or GPS into anything we write.
    clean = Image.new("RGB", rgb.size)
    clean.paste(rgb)
    return clean

"""Safe decoding of uploads: decide the format from the bytes, refuse what is too big
before decoding pixels, and hand back one clean sRGB image with no metadata."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps

from artwork.errors import BadImage, TooLarge, UnsupportedImage

# The formats we accept, by Pillow's name, and the extension their blobs are kept under.
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "AVIF": "avif"}


@dataclass(frozen=True)
class IngestLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 50_000_000
    min_side: int = 200

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0 or self.min_side <= 0:
            raise ValueError("ingest limits must be positive")


def sniff(data: bytes) -> str | None:
    """The accepted format these bytes start like, or None. Names and declared content
    types are never consulted: they are whatever the uploader's tool said."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis", b"mif1"):
        return "AVIF"
    return None


def decode(data: bytes, limits: IngestLimits) -> Image.Image:
    """Decode an upload into an RGB image, upright, in sRGB, first frame only.

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
            image = Image.open(io.BytesIO(data), formats=[kind])
            width, height = image.size
            # The header's size is checked before a single pixel is decoded.
            if width * height > limits.max_pixels:
                raise BadImage(
                    "too_many_pixels",
                    f"the image is {width}×{height} pixels; the limit is "
                    f"{limits.max_pixels:,} pixels",
                )
            if min(width, height) < limits.min_side:
                raise BadImage(
                    "image_too_small",
                    f"the image is {width}×{height}; both sides must be at least "
                    f"{limits.min_side} pixels",
                )
            image.seek(0)
            image.load()
            return _normalise(image)
    except BadImage:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        raise BadImage(
            "undecodable_image", f"the {kind} image cannot be decoded: {error}"
        ) from None


_SRGB = ImageCms.createProfile("sRGB")


def _normalise(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clip.
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if icc and image.mode in ("RGB", "CMYK", "RGBA"):
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

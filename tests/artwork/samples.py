"""Uploads the artwork tests throw at keyart: real images in every accepted format and in
awkward modes, and hostile or broken files. All generated here (or shipped by a package)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import cv2
import numpy as np
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from artwork.demo import poster


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def scene(seed: int = 1) -> Image.Image:
    """A poster-like picture that is not a near-duplicate of another seed's."""
    return poster(f"Sample {seed}", "portrait", ("dark", "bright", "cool", "warm")[seed % 4], seed)


def astronaut() -> Image.Image:
    """scikit-image's sample photograph of Eileen Collins: one real, smiling face."""
    import skimage.data

    return Image.fromarray(skimage.data.astronaut())


def halves(size: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...], mode: str):  # type: ignore[no-untyped-def]
    """An image whose top half is one colour and bottom half another."""
    image = Image.new(mode, size, bottom)
    ImageDraw.Draw(image).rectangle((0, 0, size[0], size[1] // 2 - 1), fill=top)
    return image


def exif_rotated_jpeg() -> bytes:
    """Stored 600×400, red on top; EXIF orientation 6 says: turn it 90° clockwise to show.
    Also carries a GPS position, which must not survive."""
    image = halves((600, 400), (255, 0, 0), (0, 0, 255), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "SpyCam"
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (48.0, 51.0, 29.0)
    gps[3] = "E"
    gps[4] = (2.0, 17.0, 40.0)
    return encoded(image, "JPEG", exif=exif.tobytes(), quality=95)


def cmyk_jpeg() -> bytes:
    # Pure cyan in CMYK is (0, 255, 255) in RGB.
    return encoded(Image.new("CMYK", (300, 300), (255, 0, 0, 0)), "JPEG", quality=95)


def png_16bit_grey() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 300, dtype=np.uint16), (300, 1))
    return encoded(Image.fromarray(ramp), "PNG")


def png_16bit_rgb() -> bytes:
    """48-bit RGB PNG (Pillow cannot write one; OpenCV can). Pure green."""
    pixels = np.zeros((300, 300, 3), dtype=np.uint16)
    pixels[..., 1] = 65535  # OpenCV is BGR: the middle channel is green either way
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    return data.tobytes()


def palette_with_transparency() -> bytes:
    """A palette PNG whose index 0 is transparent: left half transparent, right half blue."""
    image = Image.new("P", (300, 300), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    ImageDraw.Draw(image).rectangle((150, 0, 299, 299), fill=1)
    return encoded(image, "PNG", transparency=0)


def animated_webp() -> bytes:
    """Two frames: red, then blue. The first frame is what we keep."""
    frames = [Image.new("RGB", (300, 300), c) for c in ((255, 0, 0), (0, 0, 255))]
    return encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)


def truncated_jpeg() -> bytes:
    data = encoded(scene(seed=3), "JPEG", quality=90)
    return data[: len(data) // 2]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`×`height` but holds almost no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def png_with_text_bomb() -> bytes:
    """A valid small PNG carrying a compressed text chunk that inflates to 64 MB."""
    info = PngInfo()
    info.add_text("comment", "A" * (64 * 1024 * 1024), zip=True)
    return encoded(scene(seed=5), "PNG", pnginfo=info)


def zip_named_jpg() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("poster.jpg", encoded(scene(seed=6), "JPEG"))
    return buffer.getvalue()


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="600" height="900">'
    b'<rect width="600" height="900" fill="red"/><script>alert(1)</script></svg>'
)

# HEIC shares AVIF's container; only the brands tell them apart.
HEIC_LIKE = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


def poster_image(composition: str, seed: int = 11) -> Image.Image:
    """One of the demo generator's posters (drawn faces for `portrait`, `close-up`, `group`)."""
    return poster("Sample", composition, "warm", seed)

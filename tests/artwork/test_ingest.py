"""Safe decoding: every accepted format, the awkward modes, and hostile or broken files."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from artwork.errors import BadImage, TooLarge, UnsupportedImage
from artwork.ingest import IngestLimits, decode, sniff
from artwork.renditions import DEFAULT_PRESETS
from tests.artwork import samples

LIMITS = IngestLimits()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF"])
def test_each_accepted_format_decodes_to_rgb(fmt: str) -> None:
    source = samples.scene(seed=2)
    data = samples.encoded(source, fmt, quality=95)
    assert sniff(data) == fmt
    decoded = decode(data, LIMITS)
    assert decoded.format == fmt
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (800, 1200)
    for point in ((400, 5), (400, 600), (50, 1150)):
        got, want = decoded.image.getpixel(point), source.getpixel(point)
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 12, point


def test_format_is_decided_by_bytes_not_by_name() -> None:
    png = samples.encoded(samples.scene(), "PNG")
    assert sniff(png) == "PNG"
    assert sniff(samples.zip_named_jpg()) is None
    assert sniff(samples.SVG) is None
    assert sniff(samples.HEIC_LIKE) is None


def test_exif_orientation_is_applied() -> None:
    decoded = decode(samples.exif_rotated_jpeg(), LIMITS)
    # Stored 600×400 with red on top; turned clockwise, red is on the right.
    assert (decoded.width, decoded.height) == decoded.image.size == (400, 600)
    red, blue = decoded.image.getpixel((350, 300)), decoded.image.getpixel((50, 300))
    assert red[0] > 200 and red[2] < 60
    assert blue[2] > 200 and blue[0] < 60


def test_no_metadata_survives_decoding() -> None:
    image = decode(samples.exif_rotated_jpeg(), LIMITS).image
    assert not image.getexif()
    assert not {"exif", "icc_profile", "xmp"} & set(image.info)


def test_cmyk_becomes_rgb() -> None:
    image = decode(samples.cmyk_jpeg(), LIMITS).image
    r, g, b = image.getpixel((150, 150))
    assert image.mode == "RGB"
    assert r < 40 and g > 200 and b > 200  # cyan


def test_16bit_greyscale_png_keeps_its_range() -> None:
    image = decode(samples.png_16bit_grey(), LIMITS).image
    assert image.mode == "RGB"
    assert image.getpixel((0, 10))[0] < 5
    assert image.getpixel((299, 10))[0] > 250
    assert 100 < image.getpixel((150, 10))[0] < 155


def test_16bit_rgb_png() -> None:
    r, g, b = decode(samples.png_16bit_rgb(), LIMITS).image.getpixel((10, 10))
    assert (r, b) == (0, 0) and g > 250


def test_palette_transparency_is_flattened_on_white() -> None:
    image = decode(samples.palette_with_transparency(), LIMITS).image
    assert image.getpixel((10, 10)) == (255, 255, 255)
    assert image.getpixel((290, 10)) == (0, 0, 255)


def test_animated_webp_gives_its_first_frame() -> None:
    data = samples.animated_webp()
    assert Image.open(io.BytesIO(data)).n_frames == 2
    r, _, b = decode(data, LIMITS).image.getpixel((150, 150))
    assert r > 200 and b < 60


def test_truncated_jpeg_is_refused() -> None:
    with pytest.raises(BadImage) as caught:
        decode(samples.truncated_jpeg(), LIMITS)
    assert caught.value.code == "undecodable_image"
    assert "truncated" in caught.value.message


def test_a_header_pillow_cannot_identify_is_refused_in_plain_words() -> None:
    with pytest.raises(BadImage) as caught:
        decode(b"\xff\xd8\xff\xdb" + bytes(16), LIMITS)  # JPEG's magic, then nothing
    assert caught.value.code == "undecodable_image"
    assert caught.value.message == "the JPEG image cannot be decoded: cannot identify image file"


@pytest.mark.parametrize("size", [(100_000, 100_000), (60_000, 1_000)])
def test_pixel_limit_is_checked_from_the_header(size: tuple[int, int]) -> None:
    with pytest.raises(BadImage) as caught:
        decode(samples.png_claiming(*size), LIMITS)
    # Not "undecodable": it was refused before any pixel data was read.
    assert caught.value.code == "too_many_pixels"
    assert f"{size[0]}×{size[1]}" in caught.value.message


def test_huge_header_allocates_no_pixels() -> None:
    """In a fresh process, refusing a 100,000×100,000 PNG barely moves peak memory (its
    pixels would be 30 GB; even one row would be 300 kB per call)."""
    script = textwrap.dedent(
        """
        import json, resource
        from artwork.errors import BadImage
        from artwork.ingest import IngestLimits, decode
        from tests.artwork.samples import png_claiming
        data = png_claiming(100_000, 100_000)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(50):
            try:
                decode(data, IngestLimits())
            except BadImage as error:
                code = error.code
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"code": code, "grew_kb": after - before}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    result = json.loads(out)
    assert result["code"] == "too_many_pixels"
    assert result["grew_kb"] < 2048


def test_header_that_lies_about_its_size_is_refused() -> None:
    with pytest.raises(BadImage) as caught:
        decode(samples.png_claiming(4000, 3000), LIMITS)
    assert caught.value.code == "undecodable_image"


def test_compressed_text_bomb_is_refused() -> None:
    with pytest.raises(BadImage) as caught:
        decode(samples.png_with_text_bomb(), LIMITS)
    assert caught.value.code == "undecodable_image"


@pytest.mark.parametrize(
    "data",
    [samples.zip_named_jpg(), samples.SVG, samples.HEIC_LIKE, b"GIF89a" + b"\x00" * 100],
    ids=["zip", "svg", "heic", "gif"],
)
def test_other_files_are_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedImage):
        decode(data, LIMITS)


def test_empty_file_is_unsupported() -> None:
    with pytest.raises(UnsupportedImage) as caught:
        decode(b"", LIMITS)
    assert "empty" in caught.value.message


def test_too_small_and_too_large() -> None:
    small = samples.encoded(Image.new("RGB", (300, 150), "white"), "PNG")
    with pytest.raises(BadImage) as caught:
        decode(small, LIMITS)
    assert caught.value.code == "image_too_small"
    data = samples.encoded(samples.scene(), "JPEG")
    with pytest.raises(TooLarge):
        decode(data, IngestLimits(max_bytes=len(data) - 1))


def test_large_jpeg_is_decoded_only_as_large_as_the_presets_need() -> None:
    big = Image.new("RGB", (6000, 4000), (40, 90, 160))
    decoded = decode(samples.encoded(big, "JPEG", quality=80), LIMITS, DEFAULT_PRESETS)
    assert (decoded.width, decoded.height) == (6000, 4000)
    # billboard-1920 needs 1920×1080 and boxart-684 needs 1026 rows: 1/2 scale covers both.
    width, height = decoded.image.size
    assert 1920 <= width <= 3000 and 1080 <= height <= 2000


def test_embedded_icc_profile_is_converted_and_a_broken_one_ignored() -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = Image.new("RGB", (300, 300), (200, 60, 30))
    for icc in (srgb, b"not a profile at all"):
        decoded = decode(samples.encoded(source, "PNG", icc_profile=icc), LIMITS).image
        assert "icc_profile" not in decoded.info
        got = decoded.getpixel((150, 150))
        assert max(abs(a - b) for a, b in zip(got, (200, 60, 30), strict=True)) <= 2


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF"])
def test_corrupted_files_fail_cleanly_or_decode(fmt: str) -> None:
    """Flip, cut and splice bytes of a valid file: decoding either works or raises one of
    keyart's own errors (a 4xx), never anything that would be a 500."""
    import random

    from artwork.errors import ArtworkError

    image = samples.scene(seed=13).resize((240, 360))
    valid = samples.encoded(image, fmt)
    rng = random.Random(fmt)
    for _ in range(60):
        data = bytearray(valid)
        kind = rng.choice(("flip", "cut", "splice"))
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(4, len(data))] = rng.randrange(256)
        elif kind == "cut":
            data = data[: rng.randrange(12, len(data))]
        else:
            start = rng.randrange(12, len(data))
            data[start:start] = rng.randbytes(rng.randint(1, 64))
        try:
            decoded = decode(bytes(data), IngestLimits(min_side=16))
        except ArtworkError:
            continue
        assert decoded.image.mode == "RGB"

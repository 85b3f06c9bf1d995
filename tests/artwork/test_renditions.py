"""Presets, crops that keep what matters, and the full default rendition set."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from artwork.faces import detect_faces, saliency_centre
from artwork.pipeline import PipelineConfig, prepare, process
from artwork.renditions import DEFAULT_PRESETS, Preset, crop_box, parse_presets
from tests.artwork import samples


def test_default_presets() -> None:
    by_group: dict[str, list[Preset]] = {}
    for preset in DEFAULT_PRESETS:
        by_group.setdefault(preset.group, []).append(preset)
    assert sorted(by_group) == ["billboard", "boxart", "square"]
    assert len(by_group["boxart"]) == 2 and len(by_group["billboard"]) == 3
    assert len(by_group["square"]) == 1
    assert all(abs(p.width / p.height - 2 / 3) < 0.01 for p in by_group["boxart"])
    assert all(abs(p.width / p.height - 16 / 9) < 0.01 for p in by_group["billboard"])
    assert max(p.width for p in by_group["billboard"]) == 1920
    assert all(p.width == p.height for p in by_group["square"])


def test_parse_presets() -> None:
    presets = parse_presets(" boxart=2:3@300 ; hero=21:9@2100 ")
    assert [(p.name, p.width, p.height) for p in presets] == [
        ("boxart-300", 300, 450),
        ("hero-2100", 2100, 900),
    ]


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("boxart=2:3", "name=W:H@width"),
        ("boxart=0:3@300", "two positive numbers"),
        ("boxart=2:3@300,300", "given twice"),
        ("boxart=2:3@5", "16..4096"),
        ("", "no presets"),
        ("bad/name=1:1@100", "name=W:H@width"),
    ],
)
def test_parse_presets_says_what_is_wrong(spec: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_presets(spec)


def test_crop_box_centres_on_focus_within_the_edges() -> None:
    assert crop_box((1000, 500), 1.0, (0.5, 0.5)) == (250, 0, 750, 500)
    assert crop_box((1000, 500), 1.0, (0.9, 0.5)) == (500, 0, 1000, 500)
    assert crop_box((1000, 500), 1.0, (0.3, 0.1)) == (50, 0, 550, 500)
    assert crop_box((500, 1000), 16 / 9, (0.5, 0.0)) == (0, 0, 500, 281)


def test_every_preset_in_every_format_without_metadata() -> None:
    processed = process(samples.exif_rotated_jpeg(), PipelineConfig())
    made = {(r.preset, r.format): r for r in processed.renditions}
    assert len(made) == len(DEFAULT_PRESETS) * 3
    pillow_names = {"avif": "AVIF", "webp": "WEBP", "jpg": "JPEG"}
    for preset in DEFAULT_PRESETS:
        for fmt, name in pillow_names.items():
            data = made[(preset.name, fmt)].data
            image = Image.open(io.BytesIO(data))
            assert image.format == name
            assert image.size == (preset.width, preset.height)
            assert not image.getexif(), (preset.name, fmt)
            assert not {"exif", "xmp", "icc_profile"} & set(image.info)
            assert b"SpyCam" not in data and b"GPS" not in data
    # Sized sensibly: AVIF and WebP smaller than JPEG for the same picture.
    big = {fmt: len(made[("billboard-1920", fmt)].data) for fmt in pillow_names}
    assert big["avif"] < big["jpg"] and big["webp"] < big["jpg"]


def _face_box(image: Image.Image) -> tuple[float, float, float, float]:
    (face, *_) = detect_faces(image)
    return face.x, face.y, face.x + face.width, face.y + face.height


def _inside(face: tuple[float, ...], box: tuple[int, ...], size: tuple[int, int]) -> bool:
    left, top, right, bottom = box
    w, h = size
    horizontal = left <= face[0] * w and face[2] * w <= right
    return horizontal and top <= face[1] * h and face[3] * h <= bottom


PRESETS = (Preset("boxart-200", 200, 300), Preset("billboard-320", 320, 180))


def test_crops_keep_a_real_face_in_frame() -> None:
    photo = samples.astronaut()  # 512×512, the face in the upper third
    face = _face_box(photo)
    processed = process(samples.encoded(photo, "PNG"), PipelineConfig(PRESETS))
    assert processed.focus_source == "faces"
    assert processed.features["faces"] == "one"
    for preset in PRESETS:
        box = crop_box(photo.size, preset.width / preset.height, processed.focus)
        assert _inside(face, box, photo.size), preset.name
        rendered = next(r for r in processed.renditions if r.preset == preset.name)
        # The face is still there to be found in what a viewer sees.
        assert detect_faces(Image.open(io.BytesIO(rendered.data)).convert("RGB")), preset.name
    # A centre crop to 16:9 would have cut the face: the crop really followed it.
    centre = crop_box(photo.size, 16 / 9, (0.5, 0.5))
    assert not _inside(face, centre, photo.size)


def test_editor_focus_overrides_the_faces() -> None:
    photo = samples.astronaut()
    face = _face_box(photo)
    processed = process(samples.encoded(photo, "PNG"), PipelineConfig(PRESETS), (0.5, 1.0))
    assert processed.focus_source == "editor" and processed.focus == (0.5, 1.0)
    box = crop_box(photo.size, 16 / 9, processed.focus)
    assert box[3] == photo.height  # the bottom, where the editor pointed
    assert not _inside(face, box, photo.size)


def test_without_faces_the_crop_follows_the_salient_object() -> None:
    # A wide, plain picture with one bright object near the right edge.
    image = Image.new("RGB", (1200, 400), (30, 60, 40))
    ImageDraw.Draw(image).ellipse((1000, 150, 1100, 250), fill=(250, 220, 40))
    x, y = saliency_centre(image)
    assert x > 0.75 and 0.3 < y < 0.7
    prepared = prepare(samples.encoded(image, "PNG"), PipelineConfig(PRESETS))
    assert prepared.faces == []
    processed = process(samples.encoded(image, "PNG"), PipelineConfig(PRESETS))
    assert processed.focus_source == "saliency"
    box = crop_box(image.size, 2 / 3, processed.focus)
    assert box[0] <= 1000 and box[2] >= 1100

"""Image features: torch batch statistics, faces and smiles, and the optional embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from artwork.embedding import Embedder, EmbeddingError
from artwork.faces import detect_faces
from artwork.features import face_features, image_features, pixel_statistics
from artwork.pipeline import PipelineConfig, process
from artwork.renditions import Preset
from tests.artwork import samples


def _flat(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (300, 300), colour)


def _checkerboard(cell: int) -> Image.Image:
    # 256 square: the statistics' own size, so no resampling blurs the cells.
    tiles = (np.indices((256, 256)) // cell).sum(0) % 2
    return Image.fromarray((tiles * 255).astype(np.uint8)).convert("RGB")


def test_pixel_statistics_of_known_images() -> None:
    black, white, red, board = pixel_statistics(
        [_flat((0, 0, 0)), _flat((255, 255, 255)), _flat((230, 10, 10)), _checkerboard(8)]
    )
    assert black["brightness"] == 0 and white["brightness"] == 1
    assert black["contrast"] == 0 and board["contrast"] > 0.95
    assert white["saturation"] == 0 and red["saturation"] > 0.9
    assert red["hue"] == "red" and red["hues"] == ["red"]
    assert white["hue"] == "none" and white["hues"] == []
    assert red["colourfulness"] > 0.4 and white["colourfulness"] == 0
    assert white["edge_density"] == 0 and board["edge_density"] > 0.4
    assert white["entropy"] == 0 and abs(board["entropy"] - 1 / 8) < 0.01


def test_every_number_is_in_unit_range() -> None:
    images = [samples.scene(seed=s) for s in range(4)] + [samples.astronaut()]
    for stats in pixel_statistics(images):
        for key, value in stats.items():
            if isinstance(value, float):
                assert 0.0 <= value <= 1.0, key


def test_a_batch_gives_the_same_features_as_one_at_a_time() -> None:
    images = [samples.scene(seed=s) for s in range(3)]
    together = pixel_statistics(images)
    alone = [pixel_statistics([image])[0] for image in images]
    assert together == alone


def test_two_dominant_hues() -> None:
    image = _flat((20, 40, 220))
    ImageDraw.Draw(image).rectangle((0, 0, 299, 130), fill=(240, 200, 0))
    (stats,) = pixel_statistics([image])
    assert stats["hues"] == ["blue", "yellow"]


def test_faces_of_a_real_photo() -> None:
    photo = samples.astronaut()
    faces = detect_faces(photo)
    assert len(faces) == 1
    face = faces[0]
    # Eileen Collins' face is in the upper middle of the 512×512 photo.
    assert 0.3 < face.centre[0] < 0.6 and 0.1 < face.centre[1] < 0.35
    (features,) = image_features([photo], [faces])
    assert features["faces"] == "one"
    assert features["smile"] is True  # she smiles, teeth showing
    assert 0.1 < features["face_area"] < 0.4
    assert features["face_x"] == pytest.approx(face.centre[0], abs=1e-3)


def test_no_faces_in_a_landscape_and_no_smile_on_a_blank_face() -> None:
    assert detect_faces(_flat((90, 140, 200))) == []
    assert face_features([]) == {"faces": "none", "face_area": 0.0, "smile": False}


def test_face_count_is_bucketed() -> None:
    group = samples.poster_image("group")
    features = face_features(detect_faces(group))
    assert features["faces"] in ("two", "group")
    assert (
        features["face_area"]
        < face_features(detect_faces(samples.poster_image("close-up")))["face_area"]
    )


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small torchvision backbone's state dict, randomly initialised and saved here: the
    loading code is what is tested, nothing is downloaded."""
    import torch
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "mobilenet.pt"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    return path


def test_embedding_from_operator_weights(mobilenet_weights: Path) -> None:
    embedder = Embedder(mobilenet_weights, "mobilenet_v3_small")
    images = [samples.scene(seed=1), samples.astronaut(), samples.scene(seed=1)]
    first, second, again = embedder.embed(images)
    assert len(first) == 576
    assert sum(v * v for v in first) == pytest.approx(1.0, abs=1e-3)
    assert first == again and first != second


def test_embedding_weights_of_the_wrong_backbone_are_refused(
    mobilenet_weights: Path, tmp_path: Path
) -> None:
    with pytest.raises(EmbeddingError, match="not a resnet18 state dict"):
        Embedder(mobilenet_weights, "resnet18")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(EmbeddingError, match="cannot read"):
        Embedder(junk, "mobilenet_v3_small")


def test_pipeline_stores_the_embedding(mobilenet_weights: Path) -> None:
    config = PipelineConfig(
        (Preset("boxart-200", 200, 300),),
        embedding_weights=mobilenet_weights,
        embedding_backbone="mobilenet_v3_small",
    )
    processed = process(samples.encoded(samples.scene(seed=4), "JPEG"), config)
    assert processed.embedding is not None and len(processed.embedding) == 576
    assert config.fingerprint != PipelineConfig((Preset("boxart-200", 200, 300),)).fingerprint

"""The pipeline in a child process: same results, same errors, and a hang is cut off."""

from __future__ import annotations

import pytest

from artwork.errors import BadImage, UnsupportedImage
from artwork.isolation import PipelineProcess, shared_pipeline_process
from artwork.pipeline import PipelineConfig, process
from artwork.renditions import Preset
from tests.artwork import samples

CONFIG = PipelineConfig((Preset("boxart-200", 200, 300),))


def test_child_gives_what_the_pipeline_gives_here() -> None:
    data = samples.encoded(samples.astronaut(), "PNG")
    child = shared_pipeline_process()(data, CONFIG, None)
    here = process(data, CONFIG, None)
    assert child.features == here.features
    assert child.placeholder == here.placeholder
    assert child.phash == here.phash
    assert [r.data for r in child.renditions] == [r.data for r in here.renditions]


def test_errors_come_back_as_themselves() -> None:
    runner = shared_pipeline_process()
    with pytest.raises(UnsupportedImage):
        runner(samples.SVG, CONFIG, None)
    with pytest.raises(BadImage) as caught:
        runner(samples.png_claiming(100_000, 100_000), CONFIG, None)
    assert caught.value.code == "too_many_pixels"


def test_a_hang_is_cut_off_and_the_next_upload_still_works() -> None:
    runner = PipelineProcess(timeout=0.001)  # shorter than starting the child at all
    data = samples.encoded(samples.scene(seed=12), "JPEG")
    try:
        with pytest.raises(BadImage) as caught:
            runner(data, CONFIG, None)
        assert caught.value.code == "processing_timeout"
        runner.timeout = 120.0
        assert runner(data, CONFIG, None).width == 800
    finally:
        runner.close()


def test_anything_else_a_file_provokes_is_refused_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import cv2

    from artwork import isolation

    def decoder_blows_up(*_: object) -> None:
        raise cv2.error("OpenCV(4.x) something deep inside")

    monkeypatch.setattr(isolation, "process", decoder_blows_up)
    assert isolation._process_in_child(b"...", CONFIG, None) == (
        "BadImage",
        "unprocessable_image",
        "the image could not be processed",
    )
    assert "pipeline failed" in caplog.text

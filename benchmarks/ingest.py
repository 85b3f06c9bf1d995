"""How long, and how much memory, one 24-megapixel upload takes from bytes to stored
variant: decode, faces, every preset in every format, features, placeholder, blobs and the
database row. Printed next to the floor of Pillow alone doing `draft` + `thumbnail` to the
largest preset, measured in the same run, on one core.

    python benchmarks/ingest.py [--repeat 3]

Each measurement runs in a fresh process pinned to one CPU, so its peak resident memory
is its own. Target: under 2 s and under 500 MB peak for the whole upload.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE = (6000, 4000)  # 24 megapixels, a full-frame camera's output


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    # The high-water mark of this process's own memory (getrusage's ru_maxrss would also
    # count the parent's peak, inherited across fork).
    return _status_mb("VmHWM")


def make_jpeg(path: Path) -> None:
    """A photo-like 24 MP JPEG: a poster with a face, upscaled, with sensor-like grain so it
    compresses like a photograph rather than like a flat drawing."""
    import numpy as np
    from PIL import Image

    from artwork.demo import poster

    image = poster("Benchmark", "portrait", "warm", 3).resize(
        (SIZE[1], SIZE[0]), Image.Resampling.BICUBIC
    )
    image = image.transpose(Image.Transpose.ROTATE_90)  # landscape, 6000×4000
    grain = np.random.default_rng(0).normal(0, 6, (SIZE[1], SIZE[0], 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=92)


def _one_core() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    os.environ["OMP_NUM_THREADS"] = "1"


def measure_floor(path: Path, repeat: int) -> dict[str, object]:
    from PIL import Image

    from artwork.renditions import DEFAULT_PRESETS

    largest = max(DEFAULT_PRESETS, key=lambda p: p.width * p.height)
    data = path.read_bytes()
    baseline = _rss_mb()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (largest.width, largest.height))
        image.thumbnail((largest.width, largest.height))
        times.append(time.perf_counter() - start)
    return {"seconds": times, "baseline_mb": baseline, "peak_mb": _peak_mb()}


def measure_torch_import(path: Path, repeat: int) -> dict[str, object]:
    """What importing torch alone costs: part of every upload process's peak."""
    baseline = _rss_mb()
    start = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    return {
        "seconds": [time.perf_counter() - start],
        "baseline_mb": baseline,
        "peak_mb": _peak_mb(),
    }


def measure_upload(path: Path, repeat: int) -> dict[str, object]:
    import cv2
    import torch
    from sqlalchemy.orm import Session

    from artwork import catalog
    from artwork.catalog import Upload
    from artwork.demo import poster
    from artwork.pipeline import PipelineConfig
    from artwork.store import LocalBlobStore
    from web.db import make_engine, upgrade

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    data = path.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine)
        store = LocalBlobStore(Path(tmp) / "media")
        config = PipelineConfig()
        with Session(engine) as session:
            # Warm up: lazy imports, the Haar cascades, torch's first kernels.
            catalog.create_title(session, "warm-up", "Warm up")
            buffer = io.BytesIO()
            poster("Warm", "portrait", "dark", 1).save(buffer, "JPEG")
            catalog.add_artwork(session, store, "warm-up", Upload(buffer.getvalue()), config=config)
            session.commit()
        baseline = _rss_mb()
        times = []
        for index in range(repeat):
            with Session(engine) as session:
                catalog.create_title(session, f"t{index}", "Benchmark")
                start = time.perf_counter()
                catalog.add_artwork(session, store, f"t{index}", Upload(data), config=config)
                session.commit()
                times.append(time.perf_counter() - start)
        engine.dispose()
    return {"seconds": times, "baseline_mb": baseline, "peak_mb": _peak_mb()}


def _child_peak_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def measure_isolated(path: Path, repeat: int) -> dict[str, object]:
    """The upload as a web worker makes it: the pipeline in a spawned child, the database and
    blobs here. Reports this (web) process's peak and the child's separately."""
    from sqlalchemy.orm import Session

    from artwork import catalog
    from artwork.catalog import Upload
    from artwork.demo import poster
    from artwork.isolation import PipelineProcess
    from artwork.pipeline import PipelineConfig
    from artwork.store import LocalBlobStore
    from web.db import make_engine, upgrade

    data = path.read_bytes()
    runner = PipelineProcess(timeout=600)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine)
        store = LocalBlobStore(Path(tmp) / "media")
        config = PipelineConfig()
        with Session(engine) as session:
            catalog.create_title(session, "warm-up", "Warm up")
            buffer = io.BytesIO()
            poster("Warm", "portrait", "dark", 1).save(buffer, "JPEG")
            upload = Upload(buffer.getvalue())
            catalog.add_artwork(session, store, "warm-up", upload, config=config, runner=runner)
            session.commit()
        baseline = _rss_mb()
        times = []
        for index in range(repeat):
            with Session(engine) as session:
                catalog.create_title(session, f"t{index}", "Benchmark")
                start = time.perf_counter()
                catalog.add_artwork(
                    session, store, f"t{index}", Upload(data), config=config, runner=runner
                )
                session.commit()
                times.append(time.perf_counter() - start)
        children = list(getattr(runner._executor(), "_processes", {}))
        child_peak = max((_child_peak_mb(pid) for pid in children), default=0.0)
        runner.close()
        engine.dispose()
    return {
        "seconds": times,
        "baseline_mb": baseline,
        "peak_mb": _peak_mb(),
        "child_peak_mb": child_peak,
    }


def _child(kind: str, path: Path, repeat: int) -> dict[str, object]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure",
            kind,
            "--image",
            str(path),
            "--repeat",
            str(repeat),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--measure", choices=["floor", "torch", "upload", "isolated"], help=argparse.SUPPRESS
    )
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _one_core()
        measure = {
            "floor": measure_floor,
            "torch": measure_torch_import,
            "isolated": measure_isolated,
        }.get(args.measure, measure_upload)
        print(json.dumps(measure(args.image, args.repeat)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "24mp.jpg"
        make_jpeg(path)
        print(f"input: {SIZE[0]}×{SIZE[1]} JPEG, {path.stat().st_size / 1e6:.1f} MB")
        floor = _child("floor", path, args.repeat)
        torch_import = _child("torch", path, 1)
        upload = _child("upload", path, args.repeat)
        isolated = _child("isolated", path, args.repeat)

    from artwork.renditions import DEFAULT_PRESETS

    print(
        f"presets: {len(DEFAULT_PRESETS)} × 3 formats (avif, webp, jpg); "
        f"one core; median of {args.repeat}"
    )
    rows = (
        ("pillow floor: draft + thumbnail", floor),
        ("importing torch alone (once)", torch_import),
        ("whole upload (warm process)", upload),
        ("same, pipeline in a child (web)", isolated),
    )
    print(f"{'':34} {'time s':>8} {'peak RSS MB':>12} {'above start MB':>15}")
    for label, result in rows:
        seconds = statistics.median(result["seconds"])  # type: ignore[arg-type]
        peak, start = result["peak_mb"], result["baseline_mb"]
        print(f"{label:34} {seconds:8.3f} {peak:12.0f} {peak - start:15.0f}")  # type: ignore[operator]
    ratio = statistics.median(upload["seconds"]) / statistics.median(floor["seconds"])  # type: ignore[arg-type]
    print(f"whole upload / floor: {ratio:.1f}× the time")
    within_time = statistics.median(upload["seconds"]) < 2.0  # type: ignore[arg-type]
    within_memory = upload["peak_mb"] < 500  # type: ignore[operator]
    print(
        f"  the child that ran the pipeline for the web process peaked at "
        f"{isolated['child_peak_mb']:.0f} MB; the web process itself at "
        f"{isolated['peak_mb']:.0f} MB"
    )
    own = upload["peak_mb"] - upload["baseline_mb"]  # type: ignore[operator]
    print(
        f"target < 2 s: {'met' if within_time else 'NOT met'}; "
        f"target < 500 MB peak: {'met' if within_memory else 'NOT met'} for the process "
        f"({torch_import['peak_mb']:.0f} MB of it is torch's import), "
        f"{'met' if own < 500 else 'NOT met'} for the upload's own work ({own:.0f} MB)"
    )


if __name__ == "__main__":
    main()

"""Where the people are, and where the eye goes: faces and smiles from OpenCV's bundled Haar
cascades, and a spectral-residual saliency map for pictures without faces. These choose
each crop's centre and feed the face features.

OpenCV is imported on first use, so only processes that ingest images pay for it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# Faces are looked for on a copy this long on its longest side: Haar cascades are trained on
# 24-pixel windows, and posters' faces are large, so more pixels only cost time.
DETECT_SIDE = 640


@dataclass(frozen=True)
class Face:
    """A face's box in fractions of the image (0..1), and whether it smiles."""

    x: float
    y: float
    width: float
    height: float
    smiling: bool = False

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2


@functools.cache
def _cascades() -> tuple[Any, Any]:
    import cv2

    face = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    smile = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_smile.xml")
    if face.empty() or smile.empty():
        raise RuntimeError("OpenCV's bundled Haar cascades are missing from this install")
    return face, smile


def _grey(image: Image.Image, side: int) -> np.ndarray:
    small = image.convert("L")
    small.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(small)


def detect_faces(image: Image.Image) -> list[Face]:
    """Frontal faces, largest first. A smile is looked for in each face's lower half."""
    import cv2

    face_cascade, smile_cascade = _cascades()
    grey = cv2.equalizeHist(_grey(image, DETECT_SIDE))
    height, width = grey.shape
    # Faces smaller than 6% of the short side are crowd, not the subject of the artwork.
    min_side = max(24, int(0.06 * min(width, height)))
    found = face_cascade.detectMultiScale(
        grey, scaleFactor=1.1, minNeighbors=6, minSize=(min_side, min_side)
    )
    faces = []
    for x, y, w, h in found:
        mouth = grey[y + h // 2 : y + h, x : x + w]
        # The smile cascade fires on teeth and mouth corners; many neighbours and a minimum
        # width of a quarter face keep it from firing on lips at rest.
        smiles = smile_cascade.detectMultiScale(
            mouth, scaleFactor=1.5, minNeighbors=15, minSize=(max(8, w // 4), max(5, h // 8))
        )
        faces.append(
            Face(
                float(x / width),
                float(y / height),
                float(w / width),
                float(h / height),
                len(smiles) > 0,
            )
        )
    return sorted(faces, key=lambda f: f.area, reverse=True)


def saliency_centre(image: Image.Image) -> tuple[float, float]:
    """Where the eye goes in a picture with no faces: the weighted centre of its
    spectral-residual saliency (Hou and Zhang, CVPR 2007), in fractions of the image.

    The map is computed on a 64-pixel copy, as the paper does; its strongest tenth of pixels
    gives the centre, so a large uniform background does not pull it back to the middle.
    """
    import cv2

    grey = _grey(image, 64).astype(np.float32) / 255.0
    spectrum = np.fft.fft2(grey)
    log_amplitude = np.log(np.abs(spectrum) + 1e-8)
    phase = np.angle(spectrum)
    residual = log_amplitude - cv2.blur(log_amplitude, (3, 3))
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    saliency = cv2.GaussianBlur(saliency, (0, 0), 2.5)
    threshold = np.quantile(saliency, 0.9)
    weights = np.where(saliency >= threshold, saliency, 0.0)
    total = weights.sum()
    if not np.isfinite(total) or total <= 0:
        return 0.5, 0.5
    ys, xs = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]]
    # Pixel centres, as fractions of the whole image.
    x = float(((xs + 0.5) * weights).sum() / total / grey.shape[1])
    y = float(((ys + 0.5) * weights).sum() / total / grey.shape[0])
    return x, y


def faces_centre(faces: list[Face]) -> tuple[float, float]:
    """The centre of the box around the faces that matter: the largest, and any at least
    half its size (a two-hander keeps both leads in frame)."""
    largest = faces[0].area
    kept = [f for f in faces if f.area >= largest / 2]
    left = min(f.x for f in kept)
    top = min(f.y for f in kept)
    right = max(f.x + f.width for f in kept)
    bottom = max(f.y + f.height for f in kept)
    return (left + right) / 2, (top + bottom) / 2


def choose_focus(
    image: Image.Image, faces: list[Face], editor_focus: tuple[float, float] | None
) -> tuple[tuple[float, float], str]:
    """The point crops are centred on, and where it came from: the editor's focal point,
    else the faces, else the saliency estimate. Never a blind centre."""
    if editor_focus is not None:
        return editor_focus, "editor"
    if faces:
        return faces_centre(faces), "faces"
    return saliency_centre(image), "saliency"

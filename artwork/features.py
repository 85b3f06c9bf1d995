"""Image features the bandit can generalise from: how bright, contrasty and colourful a
variant is, and which hue dominates it."""

from __future__ import annotations

import numpy as np
from PIL import Image

_HUES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")


def image_features(image: Image.Image) -> dict[str, float | str]:
    """Features of an RGB image, each scaled to 0..1 (or a hue name).

    Colourfulness is Hasler and Süsstrunk's (2003) metric, divided by 150, roughly its
    maximum on natural images.
    """
    small = image.copy()
    small.thumbnail((256, 256))
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    rg = (r - g) * 255
    yb = (0.5 * (r + g) - b) * 255
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32) / 255.0
    saturation = hsv[..., 1]
    # Dominant hue among the pixels that have one (saturated and not near-black).
    coloured = (saturation > 0.25) & (hsv[..., 2] > 0.2)
    if coloured.any():
        bins = np.bincount(
            (hsv[..., 0][coloured] * len(_HUES)).astype(int) % len(_HUES), minlength=len(_HUES)
        )
        hue = _HUES[int(bins.argmax())]
    else:
        hue = "none"
    return {
        "brightness": round(float(luma.mean()), 4),
        "contrast": round(float(luma.std() * 2), 4),
        "saturation": round(float(saturation.mean()), 4),
        "colourfulness": round(float(min(colourfulness / 150.0, 1.0)), 4),
        "hue": hue,
    }

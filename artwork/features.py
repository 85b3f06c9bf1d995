"""Image features the bandit can generalise from: how bright, contrasty, colourful and busy
a variant is, which hues dominate it, and its faces (how many, how large, where, smiling).

Pixel statistics are torch tensor operations over a batch of images. torch is imported
inside the functions, so only processes that ingest or reprocess artwork load it; a process
that serves decisions never does.

Every number is scaled to 0..1 and counts are bucketed, so they can be used as they are as
the variant's action features; hues and face buckets are categories.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from artwork.faces import Face

# Bump when a feature's definition changes: `keyart artwork reprocess` then recomputes.
FEATURES_VERSION = 2

HUES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
# Where each named hue ends, in degrees (red wraps around 0); the names are not evenly
# spaced around the circle, so neither are these.
_HUE_ENDS = (15.0, 45.0, 70.0, 160.0, 200.0, 260.0, 300.0, 345.0)

# Statistics are taken on this square: enough for colour and edges, cheap for a batch.
SIDE = 256

# A Sobel magnitude (on 0..1 luma) above this is an edge a viewer sees at thumbnail size.
EDGE_THRESHOLD = 0.25

# A hue joins the dominant ones when at least this share of the coloured pixels has it.
HUE_SHARE = 0.2


def _batch(images: Sequence[Image.Image]) -> Any:
    import torch

    arrays = [
        np.asarray(image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR))
        for image in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def pixel_statistics(images: Sequence[Image.Image]) -> list[dict[str, Any]]:
    """Colour and complexity features of a batch of RGB images, computed together.

    - brightness: mean luma (Rec. 601); contrast: twice the luma's standard deviation.
    - saturation: mean HSV saturation.
    - colourfulness: Hasler and Süsstrunk's (2003) metric divided by 150, about its maximum
      on natural images, clipped to 1.
    - hues: the dominant hue names among saturated, not-dark pixels (most common first).
    - edge_density: the share of pixels on a visible edge (Sobel); entropy: the luma
      histogram's Shannon entropy over its 8-bit maximum. Both measure visual complexity.
    """
    import torch
    import torch.nn.functional as F

    if not images:
        return []
    rgb = _batch(images)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    flat_luma = luma.flatten(1)

    rg = (r - g) * 255
    yb = (0.5 * (r + g) - b) * 255
    colourfulness = torch.hypot(rg.flatten(1).std(1), yb.flatten(1).std(1)) + 0.3 * torch.hypot(
        rg.flatten(1).mean(1), yb.flatten(1).mean(1)
    )

    value, _ = rgb.max(1)
    minimum, _ = rgb.min(1)
    chroma = value - minimum
    saturation = torch.where(value > 0, chroma / value.clamp_min(1e-6), torch.zeros_like(value))
    # Hue in sixths of the circle, by which channel is largest (the usual HSV formula).
    safe = chroma.clamp_min(1e-6)
    hue = (
        torch.where(
            value == r,
            ((g - b) / safe) % 6,
            torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4),
        )
        / 6.0
    )
    coloured = (saturation > 0.25) & (value > 0.2) & (chroma > 0)
    bins = torch.bucketize(hue * 360.0, torch.tensor(_HUE_ENDS), right=True) % len(HUES)
    histogram = torch.zeros(len(images), len(HUES)).scatter_add_(
        1, bins.flatten(1), coloured.flatten(1).float()
    )

    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4
    kernels = torch.stack([sobel_x, sobel_x.T]).unsqueeze(1)
    gradients = F.conv2d(luma.unsqueeze(1), kernels, padding=1)[:, :, 1:-1, 1:-1]
    magnitude = gradients.pow(2).sum(1).sqrt()
    edge_density = (magnitude > EDGE_THRESHOLD / 4).float().flatten(1).mean(1)

    levels = (flat_luma * 255).round().long().clamp(0, 255)
    counts = torch.zeros(len(images), 256).scatter_add_(1, levels, torch.ones_like(flat_luma))
    p = counts / counts.sum(1, keepdim=True)
    entropy = -(p * torch.log2(p.clamp_min(1e-12))).sum(1) / 8.0

    out = []
    for i in range(len(images)):
        total = float(histogram[i].sum())
        hues: list[str] = []
        if total > 0:
            shares = histogram[i] / total
            order = torch.argsort(shares, descending=True).tolist()
            hues = [HUES[k] for k in order[:2] if float(shares[k]) >= HUE_SHARE] or [HUES[order[0]]]
        out.append(
            {
                "brightness": _unit(flat_luma[i].mean()),
                "contrast": _unit(flat_luma[i].std() * 2),
                "saturation": _unit(saturation[i].mean()),
                "colourfulness": _unit(colourfulness[i] / 150.0),
                "hue": hues[0] if hues else "none",
                "hues": hues,
                "edge_density": _unit(edge_density[i]),
                "entropy": _unit(entropy[i]),
            }
        )
    return out


def _unit(value: Any) -> float:
    return round(min(max(float(value), 0.0), 1.0), 4)


def face_features(faces: Sequence[Face]) -> dict[str, Any]:
    """Faces as features: a count bucket, the largest face's share of the picture (its
    square root, so a close-up is near 1 and a crowd near 0) and centre, and a smile."""
    count = len(faces)
    bucket = ("none", "one", "two")[count] if count < 3 else "group"
    if not faces:
        return {"faces": bucket, "face_area": 0.0, "smile": False}
    largest = faces[0]
    centre_x, centre_y = largest.centre
    return {
        "faces": bucket,
        "face_area": _unit(largest.area**0.5),
        "face_x": _unit(centre_x),
        "face_y": _unit(centre_y),
        "smile": any(f.smiling for f in faces),
    }


def image_features(
    images: Sequence[Image.Image], faces: Sequence[Sequence[Face]]
) -> list[dict[str, Any]]:
    """All stored features of a batch: pixel statistics and the faces found in each."""
    return [
        {**stats, **face_features(found)}
        for stats, found in zip(pixel_statistics(images), faces, strict=True)
    ]

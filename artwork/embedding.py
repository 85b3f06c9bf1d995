"""Optional image embeddings from a torchvision backbone whose weights the operator provides
(`KEYART_EMBEDDING_WEIGHTS`): nothing is ever downloaded. The backbone's classifier is
dropped; the pooled features, L2-normalised, are the embedding.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Backbones we know how to behead: the attribute holding the classifier.
BACKBONES = {
    "resnet18": "fc",
    "resnet34": "fc",
    "resnet50": "fc",
    "mobilenet_v3_small": "classifier",
    "mobilenet_v3_large": "classifier",
    "efficientnet_b0": "classifier",
}

# ImageNet statistics every torchvision backbone was trained with.
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class EmbeddingError(ValueError):
    """The weights file cannot be used with the backbone; the message says why."""


class Embedder:
    """A loaded backbone; `embed` maps a batch of RGB images to unit vectors."""

    def __init__(self, weights: Path, backbone: str = "resnet18") -> None:
        import torch
        import torchvision

        if backbone not in BACKBONES:
            raise EmbeddingError(
                f"unknown backbone {backbone!r}; choose one of {', '.join(sorted(BACKBONES))}"
            )
        try:
            # weights_only: a weights file is data; it must not be able to run code.
            state = torch.load(Path(weights), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
            raise EmbeddingError(f"cannot read {weights}: {error}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise EmbeddingError(f"{weights} does not hold a state dict")
        model = getattr(torchvision.models, backbone)(weights=None)
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).splitlines()[0]
            raise EmbeddingError(f"{weights} is not a {backbone} state dict: {first}") from None
        setattr(model, BACKBONES[backbone], torch.nn.Identity())
        self.model = model.eval()
        self.backbone = backbone

    def embed(self, images: Sequence[Image.Image]) -> list[list[float]]:
        import torch

        if not images:
            return []
        arrays = [
            np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
            for image in images
        ]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(_STD).view(1, 3, 1, 1)
        with torch.inference_mode():
            vectors: Any = self.model((batch - mean) / std).flatten(1)
        vectors = torch.nn.functional.normalize(vectors, dim=1)
        return [[round(float(v), 5) for v in row] for row in vectors]

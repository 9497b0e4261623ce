"""The image classifier: a small CNN sized for thumbnails (8–64 px), 1 or 3 channels.

No batch norm and no dropout on purpose: training is then a pure function of the data order and
the seed, so DDP on N ranks equals one process on the same global batch, and a resumed run equals
an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 16, width: int = 16):
        super().__init__()
        if image_size % 4 or image_size < 8:
            raise ValueError(f"image_size must be a multiple of 4 and at least 8, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * (image_size // 4) ** 2, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_model(num_classes: int, color_mode: str, image_size: int, seed: int) -> SmallCNN:
    """Same seed → same initial weights on every rank and in every re-run."""
    torch.manual_seed(seed)
    return SmallCNN(num_classes, 1 if color_mode == "L" else 3, image_size)

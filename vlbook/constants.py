"""Constants shared by the data pipeline and the losses (a leaf module: imports nothing)."""

from __future__ import annotations

#: ImageNet channel statistics: every paper's frames are normalised with them, and SimVTP's
#: normalised-pixel targets undo them first.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

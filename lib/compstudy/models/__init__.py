"""Models: the ImageNet upstream models, CIFAR networks, and one input adapter for all.

- :mod:`compstudy.models.upstream`: EfficientNet-Lite0 and DeiT-Tiny with their ImageNet
  weights (offline), and the papers' timm checkpoints (``paper`` profile).
- :mod:`compstudy.models.cifar`: the CIFAR VGG and ResNet layouts of chapter 2.

Every model records what it expects in timm's ``pretrained_cfg`` (``input_size``, ``mean``,
``std``, ``interpolation``); :func:`adapt_input` turns a loader batch (float RGB in [0, 1] at
the images' native size) into exactly that.
"""

from __future__ import annotations

import timm
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import unknown_choice
from .upstream import upstream_model, upstream_names

__all__ = ["adapt_input", "check_model_name", "pooled_features", "upstream_model", "upstream_names"]


def check_model_name(name: str) -> str:
    """Return ``name`` if it is an upstream model or a timm model name, else raise ConfigError."""
    if name not in upstream_names() and name.split(".")[0] not in timm.list_models():
        raise unknown_choice("model", name, [*upstream_names(), "<any timm model name>"])
    return name


def adapt_input(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Resize a [0, 1] RGB batch to ``model``'s input side and normalise it with its mean/std.

    Upsampling uses the model's interpolation (bicubic for both upstream models), clamped to
    [0, 1] before normalising since bicubic overshoots. A model without ``pretrained_cfg``
    gets the batch unchanged.
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if not cfg:
        return batch
    side = cfg["input_size"][-1]
    if batch.shape[-1] != side or batch.shape[-2] != side:
        mode = "bicubic" if cfg.get("interpolation", "bilinear") == "bicubic" else "bilinear"
        batch = F.interpolate(batch, size=(side, side), mode=mode, align_corners=False,
                              antialias=batch.shape[-1] > side).clamp_(0, 1)
    mean = torch.tensor(cfg["mean"], dtype=batch.dtype).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - mean) / std


@torch.no_grad()
def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pre-logit features (pooled CNN features, ViT CLS token after the final norm)."""
    return model.forward_head(model.forward_features(images), pre_logits=True)

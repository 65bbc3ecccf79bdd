"""Model factory: small models for 32×32 inputs and timm's ImageNet models by name.

Local architectures (the ``cpu`` and ``smoke`` profiles; random init, trained in notebook 00):

- ``resnet18`` / ``resnet34``: timm ResNets with timm's downsampling stem (7×7 stride-2
  conv + max-pool). On 32×32 inputs the stages see 8, 4, 2, 1 pixels; a 3×3 stem without
  max-pool would cost about 15× the compute, too much for the 2-core budget.
- ``vit``: timm ``VisionTransformer`` of width 64, depth 12, 4 heads, patch 4 (an 8×8 grid
  of 64 patch tokens + CLS), the depth of ViT-B so that layer-wise methods see 12 blocks.
  Measured on the 2-core machine it trains at about 310 images/s, against 450 for width
  128 with patch 8 (16 tokens), but on the same 10 source epochs it transfers better to
  every target but ``near`` (linear probes: far 43 % against 29 %, digits 75 % against 67 %)
  and, unlike it, beats a randomly initialised copy on ``digits``.
- ``vit_mini``: width 64, depth 6, 2 heads, patch 8, for the ``smoke`` profile.

Any other name is a timm model name (``paper`` profile, e.g. ``resnet18.tv_in1k``), built
with ImageNet weights when ``pretrained`` is set; that path needs the weights locally or
internet access.
"""

from __future__ import annotations

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.nn import functional as F

from . import data
from .errors import ConfigError, unknown_choice

IMAGE_SIZE = 32


def _vit(num_classes: int, width: int, depth: int, heads: int, patch: int) -> VisionTransformer:
    return VisionTransformer(img_size=IMAGE_SIZE, patch_size=patch, embed_dim=width, depth=depth,
                             num_heads=heads, mlp_ratio=4.0, num_classes=num_classes)


LOCAL_ARCHITECTURES = {
    "resnet18": lambda k: timm.create_model("resnet18", num_classes=k),
    "resnet34": lambda k: timm.create_model("resnet34", num_classes=k),
    "vit": lambda k: _vit(k, width=64, depth=12, heads=4, patch=4),
    "vit_mini": lambda k: _vit(k, width=64, depth=6, heads=2, patch=8),
}


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a local architecture or a timm model, else raise ConfigError."""
    if name not in LOCAL_ARCHITECTURES and name.split(".")[0] not in timm.list_models():
        raise unknown_choice("model", name, [*LOCAL_ARCHITECTURES, "<any timm model name>"])
    return name


def build_model(name: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    """Build ``name`` with a ``num_classes``-way head; seed torch before calling."""
    if name in LOCAL_ARCHITECTURES:
        if pretrained:
            raise ConfigError(f"model {name!r} is trained by notebook 00, not downloaded; "
                              "use the zoo (compstudy.zoo.upstream_model)")
        model = LOCAL_ARCHITECTURES[name](num_classes)
        # Record what the model expects, as timm does for its pretrained models.
        model.pretrained_cfg = {**(getattr(model, "pretrained_cfg", None) or {}),
                                "input_size": (3, IMAGE_SIZE, IMAGE_SIZE),
                                "mean": data.MEAN, "std": data.STD}
        return model
    check_model_name(name)
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes)
    except (OSError, RuntimeError) as error:  # hub unreachable and no local copy
        raise ConfigError(f"cannot load pretrained weights of {name!r} offline "
                          f"({type(error).__name__}); set HF_HUB_CACHE to a folder holding "
                          "them or run the paper profile with internet") from error


def adapt_input(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Turn a batch from :func:`compstudy.data.make_loader` into what ``model`` expects.

    Loader batches are 32×32 and normalised with the source statistics; timm ImageNet models
    (``paper`` profile) want their own input side and mean/std. Modules without a timm
    ``pretrained_cfg`` get the batch unchanged.
    """
    cfg = getattr(model, "pretrained_cfg", None)
    if not cfg:  # our own modules (e.g. chapter 2's CIFAR networks) take loader batches as they are
        return batch
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    source_mean = torch.tensor(data.MEAN).view(1, 3, 1, 1)
    source_std = torch.tensor(data.STD).view(1, 3, 1, 1)
    if not (torch.equal(mean, source_mean) and torch.equal(std, source_std)):
        batch = (batch * source_std + source_mean - mean) / std
    side = cfg["input_size"][-1]
    if batch.shape[-1] != side:
        batch = F.interpolate(batch, size=side, mode="bilinear", align_corners=False)
    return batch


@torch.no_grad()
def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Pre-logit features (pooled CNN features, ViT CLS token after the final norm)."""
    return model.forward_head(model.forward_features(images), pre_logits=True)

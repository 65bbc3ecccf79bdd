"""CIFAR-style networks of "Rethinking the value of network pruning" (Liu et al. 2019).

Two families, both rebuilt from a plain *spec* (a JSON-able dict) so that a pruned model is
saved as ``spec + state dict`` and never as a pickle (:func:`save_model`, :func:`load_model`):

``vgg``
    The CIFAR VGG of the paper's code: a stack of 3×3 conv-BN-ReLU layers with 2×2 max-pools
    (``"M"``), then a 2×2 average pool and the classifier Linear(c, hidden)-BN1d-ReLU-
    Linear(hidden, K). Layouts :data:`VGG_LAYOUTS`: ``vgg16`` = [64, 64, M, 128, 128, M,
    256×3, M, 512×3, M, 512×3] and ``vgg16_a`` (Li et al.'s VGG-16-A: first conv halved, the
    last six 512 → 256). A width multiplier scales every conv width and the hidden width.
``resnet``
    The CIFAR ResNet of He et al. (ResNet-20/56/110): a 3×3 stem, three stages of
    n = (depth − 2)/6 basic blocks of widths 16/32/64 (times the multiplier), parameter-free
    "option A" shortcuts (stride-2 subsampling + zero channels) where the shape changes,
    global average pool, Linear. The spec keeps one *inner* width per block (the width of
    the block's first conv), the only width L1 filter pruning changes (``cfg`` in the
    paper's ``res56prune.py``).

Initialisation follows the paper's scratch runs: Kaiming normal with fan-out
(std = sqrt(2 / (k²·C_out))), BN γ = :data:`BN_GAMMA_INIT` and β = 0, Linear N(0, 0.01).

Every model carries its input normalisation in ``pretrained_cfg`` (32 px; the mean/std of the
spec, by default :data:`CIFAR_MEAN` / :data:`CIFAR_STD` of the paper's CIFAR code), so
``models.adapt_input`` turns a [0, 1] loader batch into what it was trained on.
:func:`akamaster_resnet` loads the CIFAR-10 ResNets of Idelbayev's
``pytorch_resnet_cifar10`` (trained to convergence on the original CIFAR-10), which were
trained on inputs normalised with the ImageNet mean/std.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .. import assets
from ..errors import ConfigError, unknown_choice
from ..results import atomic_write_bytes

VGG_LAYOUTS: dict[str, list] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg16_a": [32, 64, "M", 128, 128, "M", 256, 256, 256, "M", 256, 256, 256, "M", 256, 256, 256],
}
VGG_HIDDEN = 512
RESNET_STAGE_WIDTHS = (16, 32, 64)
ARCHITECTURES = ("vgg", "resnet")
BN_GAMMA_INIT = 0.5  # network-slimming code; with the small budgets here it also trains a bit faster
# Normalize() of the paper's CIFAR scripts (Liu et al. 2019, cifar/*/main*.py)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AKAMASTER_DEPTHS = (20, 56)  # the checkpoints the asset manifest lists


def _normalised(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
    """Record the input normalisation in ``model.spec`` and ``model.pretrained_cfg``."""
    model.spec.update(mean=[float(v) for v in mean], std=[float(v) for v in std])
    model.pretrained_cfg = {"input_size": (3, 32, 32), "mean": tuple(model.spec["mean"]),
                            "std": tuple(model.spec["std"]), "interpolation": "bilinear"}


def _scaled(width: int, multiplier: float) -> int:
    return max(1, int(round(width * multiplier)))


# ----------------------------------------------------------------------------- VGG


class CifarVGG(nn.Module):
    """VGG for 32×32 inputs built from a layout list of widths and ``"M"`` (max-pool)."""

    def __init__(self, layout: Sequence, num_classes: int, hidden: int = VGG_HIDDEN,
                 mean: Sequence[float] = CIFAR_MEAN, std: Sequence[float] = CIFAR_STD):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers += [nn.Conv2d(c_in, int(item), 3, padding=1, bias=False),
                       nn.BatchNorm2d(int(item)), nn.ReLU(inplace=True)]
            c_in = int(item)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(c_in, hidden), nn.BatchNorm1d(hidden),
                                        nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))
        self.spec = {"arch": "vgg", "layout": list(layout), "num_classes": num_classes,
                     "hidden": hidden}
        _normalised(self, mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    def conv_bn_pairs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        mods = list(self.features)
        return [(m, mods[i + 1]) for i, m in enumerate(mods) if isinstance(m, nn.Conv2d)]

    def conv_widths(self) -> list[int]:
        return [conv.out_channels for conv, _ in self.conv_bn_pairs()]


def vgg_layout(name: str, width_multiplier: float = 1.0) -> list:
    """A layout of :data:`VGG_LAYOUTS` with every width scaled by ``width_multiplier``."""
    if name not in VGG_LAYOUTS:
        raise unknown_choice("VGG layout", name, VGG_LAYOUTS)
    return [w if w == "M" else _scaled(w, width_multiplier) for w in VGG_LAYOUTS[name]]


def with_widths(layout: Sequence, widths: Sequence[int]) -> list:
    """``layout`` with its conv widths replaced, in order, by ``widths``."""
    it = iter(widths)
    out = [w if w == "M" else int(next(it)) for w in layout]
    if next(it, None) is not None:
        raise ConfigError(f"{len(widths)} widths for a layout of "
                          f"{sum(w != 'M' for w in layout)} conv layers")
    return out


def vgg(num_classes: int, layout: str = "vgg16", width_multiplier: float = 1.0) -> CifarVGG:
    model = CifarVGG(vgg_layout(layout, width_multiplier), num_classes,
                     hidden=_scaled(VGG_HIDDEN, width_multiplier))
    init_weights(model)
    return model


# ----------------------------------------------------------------------------- ResNet


class _ShortcutA(nn.Module):
    """Option-A shortcut: stride-2 subsampling and zero-padded extra channels (no parameters)."""

    def __init__(self, c_out: int, stride: int):
        super().__init__()
        self.c_out, self.stride = c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.c_out - x.shape[1]
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2)) if extra > 0 else x


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, inner: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, inner, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (_ShortcutA(c_out, stride) if stride != 1 or c_in != c_out
                         else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet-(6n+2): stem, 3 stages of n basic blocks, average pool, Linear."""

    def __init__(self, depth: int, num_classes: int, stage_widths: Sequence[int],
                 inner_widths: Sequence[int] | None = None, mean: Sequence[float] = CIFAR_MEAN,
                 std: Sequence[float] = CIFAR_STD):
        super().__init__()
        n = blocks_per_stage(depth)
        inner = list(inner_widths) if inner_widths is not None else [
            w for w in stage_widths for _ in range(n)]
        if len(inner) != 3 * n:
            raise ConfigError(f"ResNet-{depth} has {3 * n} blocks, got {len(inner)} inner widths")
        self.conv1 = nn.Conv2d(3, stage_widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_widths[0])
        blocks, c_in = [], stage_widths[0]
        for s, width in enumerate(stage_widths):
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(BasicBlock(c_in, int(inner[s * n + b]), width, stride))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, num_classes)
        self.spec = {"arch": "resnet", "depth": depth, "num_classes": num_classes,
                     "stage_widths": list(stage_widths), "inner_widths": inner}
        _normalised(self, mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def stage_of_block(self) -> list[int]:
        n = blocks_per_stage(self.spec["depth"])
        return [i // n for i in range(len(self.blocks))]


def blocks_per_stage(depth: int) -> int:
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
    return (depth - 2) // 6


def resnet(num_classes: int, depth: int = 56, width_multiplier: float = 1.0) -> CifarResNet:
    model = CifarResNet(depth, num_classes, [_scaled(w, width_multiplier) for w in RESNET_STAGE_WIDTHS])
    init_weights(model)
    return model


# ----------------------------------------------------------------------------- common


def init_weights(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """The paper's scratch initialisation (see the module docstring); returns ``model``."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            with torch.no_grad():
                m.weight.normal_(0, math.sqrt(2.0 / n), generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.constant_(m.weight, BN_GAMMA_INIT)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            with torch.no_grad():
                m.weight.normal_(0, 0.01, generator=generator)
            nn.init.zeros_(m.bias)
    return model


def build(spec: dict[str, Any]) -> nn.Module:
    """A freshly initialised model of ``spec`` (the ``.spec`` of a model built here)."""
    if spec.get("arch") not in ARCHITECTURES:
        raise unknown_choice("architecture", spec.get("arch"), ARCHITECTURES)
    norm = {"mean": spec.get("mean", CIFAR_MEAN), "std": spec.get("std", CIFAR_STD)}
    if spec["arch"] == "vgg":
        model = CifarVGG(spec["layout"], spec["num_classes"], spec["hidden"], **norm)
    else:
        model = CifarResNet(spec["depth"], spec["num_classes"], spec["stage_widths"],
                            spec["inner_widths"], **norm)
    return init_weights(model)


def build_named(arch: str, num_classes: int, width_multiplier: float, depth: int = 56,
                layout: str = "vgg16") -> nn.Module:
    """``vgg`` (with ``layout``) or ``resnet`` (with ``depth``) by name."""
    if arch == "vgg":
        return vgg(num_classes, layout, width_multiplier)
    if arch == "resnet":
        return resnet(num_classes, depth, width_multiplier)
    raise unknown_choice("architecture", arch, ARCHITECTURES)


def to_bytes(model: nn.Module, extra: dict | None = None) -> bytes:
    """Architecture spec + state dict (+ JSON-able extras), as bytes of ``torch.save``."""
    buffer = io.BytesIO()
    torch.save({"spec": model.spec, "state_dict": model.state_dict(), "extra": extra or {}}, buffer)
    return buffer.getvalue()


def save_model(model: nn.Module, path: Path, extra: dict | None = None) -> Path:
    """Write ``model`` as spec + state dict, atomically."""
    atomic_write_bytes(Path(path), to_bytes(model, extra))
    return Path(path)


def load_model(path: Path) -> tuple[nn.Module, dict]:
    """Rebuild a model saved by :func:`save_model`; returns ``(model in eval mode, extra)``."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = build(payload["spec"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), payload.get("extra", {})


# ----------------------------------------------------------------------------- converged checkpoints


def _akamaster_key(key: str) -> str:
    """``module.layer{s}.{b}.*`` → ``blocks.{n·(s−1)+b}.*`` (n set by the caller), ``linear`` → ``fc``."""
    return key.removeprefix("module.").replace("linear.", "fc.", 1)


def akamaster_resnet(depth: int = 56) -> CifarResNet:
    """The converged CIFAR-10 ResNet-``depth`` of akamaster/pytorch_resnet_cifar10, in eval mode.

    The checkpoint (``compstudy.assets.fetch("cifar10_resnet<depth>")``) is a dict with
    ``best_prec1`` and a ``state_dict`` whose keys carry DataParallel's ``module.`` prefix;
    its blocks are ``layer{s}.{b}`` and its classifier ``linear``. Its option-A shortcut pads
    ``planes // 4`` zero channels on each side, as :class:`_ShortcutA` does for 16 → 32 → 64,
    so the architecture is ours at width 1. The file has no BatchNorm ``num_batches_tracked``
    buffers: every other tensor must load (strict), and only those may be missing. Inputs are
    normalised with the ImageNet mean/std, as the checkpoint was trained
    (``pretrained_cfg``); ``pretrained_cfg["best_prec1"]`` is the accuracy it stores.
    """
    if depth not in AKAMASTER_DEPTHS:
        raise unknown_choice("akamaster CIFAR-10 ResNet depth", depth, AKAMASTER_DEPTHS)
    payload = torch.load(assets.fetch(f"cifar10_resnet{depth}"), map_location="cpu",
                         weights_only=True)
    n = blocks_per_stage(depth)
    state = {}
    for key, value in payload["state_dict"].items():
        key = _akamaster_key(key)
        if key.startswith("layer"):
            stage, block, rest = key.split(".", 2)
            key = f"blocks.{n * (int(stage.removeprefix('layer')) - 1) + int(block)}.{rest}"
        state[key] = value
    model = CifarResNet(depth, 10, list(RESNET_STAGE_WIDTHS), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"checkpoint cifar10_resnet{depth} does not match CIFAR ResNet-{depth}: "
                           f"missing {missing}, unexpected {result.unexpected_keys}")
    model.pretrained_cfg["best_prec1"] = float(payload["best_prec1"])
    return model.eval()

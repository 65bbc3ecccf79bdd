"""Parameter-efficient transfer (PETL) of a timm ViT: Convpass and a plain bottleneck adapter.

SLS (Han & Tang, "Straightforward Layer-wise Pruning for More Efficient Visual Adaptation",
ECCV 2024; method section and the official ``convpass.py``) starts from a ViT whose backbone
is frozen and whose blocks carry small trainable adapters beside both sub-layers:

    h <- h + Attn(LN1 h) + s * A_attn(LN1 h)
    h <- h + MLP(LN2 h)  + s * A_mlp(LN2 h)

``convpass`` (Jie & Deng, "Convolutional Bypasses Are Better Vision Transformer Adapters",
2022; SLS's default adapter): A = Linear(dim -> 8, xavier, zero bias) -> QuickGELU -> 3x3
conv over the patch grid (the CLS token alone as a 1x1 map; the conv starts as the identity
at its centre tap) -> QuickGELU -> dropout 0.1 -> Linear(8 -> dim, zero init), so a fresh
adapter adds exactly nothing. ``adapter``: the same bottleneck without the convolution (an
AdaptFormer-style parallel adapter), the second method, which shows whether SLS depends on the
adapter. Only adapters and the classifier head are trained; only they are stored per task.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from .. import data, train
from ..errors import ConfigError, unknown_choice

METHODS = ("convpass", "adapter")
HIDDEN_DIM = 8


def check_method(method: str) -> str:
    if method not in METHODS:
        raise unknown_choice("PETL method", method, METHODS)
    return method


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Bottleneck(nn.Module):
    """One adapter: down-projection, optional 3x3 conv over the patch grid, up-projection.

    Args:
        dim: token width of the ViT.
        hidden: bottleneck width (8 in the paper).
        grid: (rows, cols) of the patch grid; ``None`` = no convolution (plain adapter).
        num_prefix: prefix tokens (CLS) in front of the patch tokens; each is convolved
            alone as a 1x1 map, which with padding 1 means only the centre tap acts on it.
        dropout: after the bottleneck (0.1 in Convpass).
    """

    def __init__(self, dim: int, hidden: int = HIDDEN_DIM, grid: tuple[int, int] | None = None,
                 num_prefix: int = 1, dropout: float = 0.1):
        super().__init__()
        self.grid, self.num_prefix = grid, num_prefix
        self.down = nn.Linear(dim, hidden)
        self.up = nn.Linear(hidden, dim)
        self.act = QuickGELU()
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        if grid is not None:
            self.conv = nn.Conv2d(hidden, hidden, 3, padding=1)
            with torch.no_grad():  # identity at the centre tap
                self.conv.weight.zero_()
                self.conv.weight[:, :, 1, 1] = torch.eye(hidden)
                self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.down(x))
        if self.grid is not None:
            b, n, c = h.shape
            rows, cols = self.grid
            p = self.num_prefix
            if n != p + rows * cols:
                raise ValueError(f"expected {p} prefix + {rows}x{cols} patch tokens, got {n}")
            patches = h[:, p:].transpose(1, 2).reshape(b, c, rows, cols)
            patches = self.conv(patches).reshape(b, c, rows * cols).transpose(1, 2)
            prefix = self.conv(h[:, :p].reshape(b * p, c, 1, 1)).reshape(b, p, c)
            h = self.act(torch.cat([prefix, patches], dim=1))
        return self.up(self.dropout(h))


class PETLBlock(nn.Module):
    """A frozen timm ViT ``Block`` with a scaled adapter beside attention and beside the MLP."""

    def __init__(self, block: nn.Module, method: str, scale: float, grid: tuple[int, int],
                 num_prefix: int, hidden: int = HIDDEN_DIM):
        super().__init__()
        check_method(method)
        self.block = block
        self.scale = scale
        dim = block.norm1.normalized_shape[0]
        conv_grid = grid if method == "convpass" else None
        self.adapter_attn = Bottleneck(dim, hidden, conv_grid, num_prefix)
        self.adapter_mlp = Bottleneck(dim, hidden, conv_grid, num_prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        h = b.norm1(x)
        x = x + b.drop_path1(b.ls1(b.attn(h))) + self.scale * self.adapter_attn(h)
        h = b.norm2(x)
        return x + b.drop_path2(b.ls2(b.mlp(h))) + self.scale * self.adapter_mlp(h)


def attach(model: nn.Module, method: str, num_classes: int, scale: float = 1.0,
           hidden: int = HIDDEN_DIM) -> nn.Module:
    """A PETL copy of a timm ``VisionTransformer``: adapters in every block, a new head.

    The backbone is frozen (``requires_grad=False``); adapters and head are trainable.
    ``model`` itself is not modified. Seed torch first: the head and the adapters'
    down-projections are drawn at random.
    """
    check_method(method)
    if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
        raise ConfigError(f"PETL needs a timm VisionTransformer, got {type(model).__name__}")
    model = copy.deepcopy(model)
    model.reset_classifier(num_classes)
    for p in model.parameters():
        p.requires_grad_(False)
    grid = tuple(model.patch_embed.grid_size)
    model.blocks = nn.Sequential(*[PETLBlock(b, method, scale, grid, model.num_prefix_tokens, hidden)
                                   for b in model.blocks])
    for p in petl_parameters(model):
        p.requires_grad_(True)
    return model


def adapter_modules(model: nn.Module) -> Iterator[nn.Module]:
    for m in model.modules():
        if isinstance(m, Bottleneck):
            yield m


def petl_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The tensors PETL trains and stores per task: every adapter, then the head."""
    params = [p for m in adapter_modules(model) for p in m.parameters()]
    return params + list(model.head.parameters())


def count_petl_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in petl_parameters(model))


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Backbone frozen, adapters and head trainable, no stale gradients; returns ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    for p in petl_parameters(model):
        p.requires_grad_(True)
    return model


def fit_petl(model: nn.Module, train_set: data.ImageSet, settings: train.FitSettings,
             batch_size: int, seed: int, desc: str = "petl", progress: bool = True):
    """Train adapters + head only (backbone frozen, no augmentation); return the history."""
    loader = data.make_loader(train_set, batch_size, shuffle=True, seed=seed)
    return train.fit(model, loader, settings, desc=desc, progress=progress,
                     params=petl_parameters(model))


def train_petl(backbone: nn.Module, method: str, train_set: data.ImageSet,
               settings: train.FitSettings, scale: float, batch_size: int, seed: int,
               desc: str = "petl", progress: bool = True) -> nn.Module:
    """A PETL copy of ``backbone`` with adapters and head trained on ``train_set``.

    ``seed`` draws the head and the adapters' initial weights, dropout and the batch order.
    """
    torch.manual_seed(seed)
    model = attach(backbone, method, len(train_set.classes), scale)
    fit_petl(model, train_set, settings, batch_size, seed, desc, progress)
    return model.eval()


def task_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What one task stores: the adapters and the head (the backbone is shared by all tasks)."""
    return {n: t.detach().clone() for n, t in model.state_dict().items()
            if ".adapter_" in n or n.startswith("head.")}


def load_task_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Put a task's adapters and head (from :func:`task_state`) into a PETL ``model``."""
    result = model.load_state_dict(dict(state), strict=False)
    missing = [k for k in result.missing_keys if ".adapter_" in k or k.startswith("head.")]
    if result.unexpected_keys or missing:
        raise ValueError(f"task state does not fit the model: unexpected {result.unexpected_keys[:3]}, "
                         f"missing {missing[:3]}")
    return model.eval()

"""Parameter-efficient transfer (PETL) of a timm ViT: Convpass and a plain bottleneck adapter.

SLS (Han & Tang 2024, papers.md §3.2) starts from a ViT whose backbone is frozen and whose
blocks carry small trainable adapters beside both sub-layers:

    h <- h + Attn(LN1 h) + s * A_attn(LN1 h)
    h <- h + MLP(LN2 h)  + s * A_mlp(LN2 h)

``convpass`` (Jie & Deng 2022, the paper's default): A = Linear(dim -> 8, xavier, zero bias)
-> QuickGELU -> 3x3 conv over the patch grid (the CLS token alone as a 1x1 map; the conv
starts as the identity at its centre tap) -> QuickGELU -> dropout -> Linear(8 -> dim, zero
init), so a fresh adapter adds exactly nothing. ``adapter``: the same bottleneck without the
convolution (an AdaptFormer-style parallel adapter), the second method that shows SLS does
not depend on the adapter. Only adapters and the classifier head are trained.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator

import torch
from torch import nn

from . import data, paths, train
from .errors import ConfigError, unknown_choice
from .results import atomic_write_bytes
from .seeding import seed_everything

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
    ``model`` itself is not modified.
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
    model.petl_method = method
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


def fit_petl(model: nn.Module, train_set: data.ImageSet, settings: train.FitSettings,
             batch_size: int = 64, seed: int = 0, augment: bool = False,
             desc: str = "petl", progress: bool = False):
    """Train adapters + head only (backbone frozen); return the history frame."""
    seed_everything(seed, threads=torch.get_num_threads())  # keep the run's thread count
    loader = data.make_loader(train_set, batch_size, shuffle=True, seed=seed, augment=augment)
    return train.fit(model, loader, settings, desc=desc, progress=progress,
                     params=petl_parameters(model))


def checkpoint_path(key: str):
    return paths.ARTIFACTS_DIR / "sls" / f"petl-{key}.pt"


def save_petl(model: nn.Module, key: str) -> None:
    """Store the per-task state only: adapters + head (the backbone is the shared zoo model)."""
    state = {n: t for n, t in model.state_dict().items()
             if ".adapter_" in n or n.startswith("head.")}
    buffer = io.BytesIO()
    torch.save({"method": model.petl_method, "depth": len(model.blocks), "state_dict": state}, buffer)
    atomic_write_bytes(checkpoint_path(key), buffer.getvalue())


def load_petl(backbone: nn.Module, key: str, num_classes: int, scale: float = 1.0) -> nn.Module | None:
    """Rebuild a cached PETL model on ``backbone`` (None on a cache miss)."""
    path = checkpoint_path(key)
    if not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = attach(backbone, payload["method"], num_classes, scale)
    result = model.load_state_dict(payload["state_dict"], strict=False)
    if result.unexpected_keys or any(".adapter_" in k or k.startswith("head.")
                                     for k in result.missing_keys):
        return None  # stale checkpoint of another layout: retrain
    return model.eval()

"""DepGraph width pruning of a PETL-transferred ViT: the baseline SLS compares against.

Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023, through Torch-Pruning,
with the settings of SLS's comparison (Han & Tang, ECCV 2024, experiments; official
``compare_depgraph.py``) and of Torch-Pruning's ViT recipe
(``examples/transformers/prune_timm_vit.py``):

- importance: ``GroupTaylorImportance``, first-order Taylor scores |w * dL/dw| from the
  cross-entropy gradients of ``n_batches`` x ``batch_size`` training images (10 x 32 there);
- per-layer (not global) pruning ratio, head dimensions pruned, head count kept, ``round_to``
  2; the classifier head and every adapter are ignored, so the residual width stays;
- afterwards each attention's ``head_dim`` and scale are reset from its pruned ``qkv`` width.

The ratio is searched so that the model loses as many parameters as SLS's truncation
(:func:`prune_to_removed`): the paper's comparison "at the same number of pruned parameters".
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .. import data, models
from . import petl


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def taylor_gradients(model: nn.Module, train_set: data.ImageSet, n_batches: int,
                     batch_size: int, seed: int) -> None:
    """Accumulate cross-entropy gradients on every parameter of ``model`` (in eval mode)."""
    for p in model.parameters():
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    model.eval()
    loader = data.make_loader(train_set, batch_size, shuffle=True, seed=seed)
    for i, (images, labels) in enumerate(loader):
        if i >= n_batches:
            break
        F.cross_entropy(model(models.adapt_input(model, images)), labels).backward()


def fix_attention(model: nn.Module) -> nn.Module:
    """After head-dim pruning: reset head_dim / attn_dim / scale from the pruned qkv width."""
    from timm.layers import Attention

    for m in model.modules():
        if isinstance(m, Attention):
            m.head_dim = m.qkv.out_features // (3 * m.num_heads)
            if hasattr(m, "attn_dim"):
                m.attn_dim = m.num_heads * m.head_dim
            m.scale = m.head_dim ** -0.5
    if not attention_consistent(model):
        raise RuntimeError("inconsistent attention widths after pruning")
    return model


def attention_consistent(model: nn.Module) -> bool:
    """Every timm Attention's head count x head dim equals its qkv and proj widths."""
    from timm.layers import Attention

    return all(m.num_heads * m.head_dim * 3 == m.qkv.out_features
               and m.proj.in_features == m.num_heads * m.head_dim
               for m in model.modules() if isinstance(m, Attention))


def prune_width(model: nn.Module, ratio: float, round_to: int = 2) -> nn.Module:
    """Group-Taylor width pruning of a copy of ``model``, whose ``.grad`` holds Taylor gradients."""
    import torch_pruning as tp
    from timm.layers import Attention

    pruned = copy.deepcopy(model)
    grads = dict(model.named_parameters())
    for name, p in pruned.named_parameters():  # deepcopy drops .grad, which Taylor reads
        p.grad = None if grads[name].grad is None else grads[name].grad.clone()
    if ratio <= 0:
        return pruned
    example = torch.randn(1, *pruned.pretrained_cfg["input_size"])
    ignored = [pruned.head] + [m for a in petl.adapter_modules(pruned) for m in a.modules()
                               if isinstance(m, (nn.Linear, nn.Conv2d))]
    num_heads = {m.qkv: m.num_heads for m in pruned.modules() if isinstance(m, Attention)}
    with warnings.catch_warnings():  # cls_token / pos_embed are unwrapped parameters; the
        warnings.simplefilter("ignore")  # residual width they follow is kept (adapters ignored)
        pruner = tp.pruner.BasePruner(
            pruned, example, importance=tp.importance.GroupTaylorImportance(),
            pruning_ratio=ratio, global_pruning=False, ignored_layers=ignored, round_to=round_to,
            num_heads=num_heads, prune_num_heads=False, prune_head_dims=True)
        pruner.step()
    return fix_attention(pruned)


@dataclass(frozen=True)
class Search:
    """Outcome of the ratio search: the per-layer ratio, the parameters removed, the relative
    error against the requested count, and the pruning trials it took."""

    ratio: float
    removed: int
    rel_error: float
    trials: int


def prunable_parameters(model: nn.Module) -> int:
    """Parameters of the layers whose widths Taylor pruning removes: qkv, proj, fc1, fc2."""
    return sum(p.numel() for n, p in model.blocks.named_parameters()
               if any(k in n for k in (".qkv.", ".proj.", ".fc1.", ".fc2.")))


def prune_to_removed(model: nn.Module, train_set: data.ImageSet, target_removed: int,
                     n_batches: int = 10, batch_size: int = 32, seed: int = 0,
                     tolerance: float = 0.015, max_trials: int = 8) -> tuple[nn.Module, Search]:
    """Width-prune a copy of the PETL ``model`` so that it loses ``target_removed`` parameters.

    The per-layer ratio starts at removed / prunable and follows a secant / bisection search
    on the removed count until the relative error is within ``tolerance``. Returns the pruned
    model (backbone frozen, adapters and head trainable, in eval mode) and the search.
    """
    work = copy.deepcopy(model)
    total = count_parameters(work)
    if target_removed <= 0:
        return petl.freeze_backbone(work).eval(), Search(0.0, 0, 0.0, 0)
    taylor_gradients(work, train_set, n_batches, batch_size, seed)
    lo, hi = 0.0, 0.98
    ratio = min(target_removed / max(prunable_parameters(work), 1), hi)
    best = None
    for trial in range(1, max_trials + 1):
        pruned = prune_width(work, ratio)
        removed = total - count_parameters(pruned)
        error = (removed - target_removed) / target_removed
        if best is None or abs(error) < abs(best[1].rel_error):
            best = pruned, Search(ratio, removed, error, trial)
        if abs(error) <= tolerance:
            break
        if removed < target_removed:
            lo = ratio
        else:
            hi = ratio
        guess = ratio * target_removed / max(removed, 1)  # the removed count is ~ linear in ratio
        ratio = guess if lo < guess < hi else (lo + hi) / 2
    pruned, search = best
    return petl.freeze_backbone(pruned).eval(), Search(search.ratio, search.removed,
                                                       search.rel_error, trial)


def restore_widths(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Rebuild a width-pruned model from its unpruned twin and its state dict.

    Every ``nn.Linear`` or ``nn.LayerNorm`` whose stored weight has another shape is replaced
    by one of the stored shape, the attention heads are reset, and the state is loaded
    strictly. So a pruned model is saved as architecture (the unpruned recipe) plus state dict.
    """
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight")
        if weight is None or weight.shape == module.weight.shape:
            continue
        if isinstance(module, nn.Linear):
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
        elif isinstance(module, nn.LayerNorm):
            new = nn.LayerNorm(weight.shape[0], eps=module.eps)
        else:
            raise ValueError(f"cannot restore the pruned width of {name} ({type(module).__name__})")
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    model.load_state_dict(dict(state), strict=True)
    return petl.freeze_backbone(fix_attention(model)).eval()

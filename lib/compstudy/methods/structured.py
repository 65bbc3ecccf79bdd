"""Pruning as Liu et al. study it, and the regimes that train the pruned architectures.

Liu, Sun, Zhou, Huang & Darrell, "Rethinking the Value of Network Pruning" (ICLR 2019):
section 3 (the three regimes) and section 4 (the pruning methods it re-examines).

Predefined structured pruning: L1-norm filter pruning (Li et al. 2017, "Pruning Filters for
Efficient ConvNets", section 3)
    In each pruned conv layer the filters of largest L1 norm ‖W[i]‖₁ are kept, one shot,
    ``int(n · (1 − ratio))`` of ``n`` (:func:`n_keep`); the others are *physically removed*
    together with their BN channel and the next layer's input channels. VGG-16-A
    (:data:`VGG16_A_RATIOS`): the first conv and the last six convs lose half their filters.
    CIFAR ResNet-56-A/B: only the first conv of each basic block is pruned, with one ratio per
    stage (:data:`LI_STAGE_RATIOS`), and a few blocks sensitive to pruning are kept whole
    (:data:`RESNET56_SKIP_IDS`, the layer ids of the paper's ``res56prune.py``;
    :func:`resnet56_skip_blocks` maps them to our blocks, also of shallower ResNets).
Automatic structured pruning: network slimming (Liu et al. 2017, "Learning Efficient
Convolutional Networks through Network Slimming", section 3)
    Sparsity training adds λ·sign(γ) to the gradient of every BN scale γ after the backward
    pass (:func:`bn_l1_hook`, an ``after_backward`` hook of :func:`compstudy.train.fit`); then
    one global threshold, the ⌊p·N⌋-th smallest |γ| over all conv BNs, keeps the channels whose
    |γ| lies above it (:func:`slimming_keep`).
Unstructured magnitude pruning (Han et al. 2015, "Learning both Weights and Connections")
    One global magnitude threshold over all conv weights (:mod:`compstudy.methods.masks`); the
    mask stays fixed through training (:func:`mask_hooks`). Dense shapes are kept, so the cost
    is counted as nonzero-conv MACs (:func:`sparse_macs`, the paper's ``count_flops.py``) and
    never timed as a speed-up.

Channels are removed with Torch-Pruning's ``DependencyGraph`` (Fang et al. 2023, "DepGraph"),
and every removal is checked to touch only the layers it should: in a ResNet, a block's inner
channels, never the residual sum (:func:`_remove_filters`).

The regimes (Liu et al. 2019, section 3): **fine-tuning** (FT) trains the pruned model with
its inherited weights at a small constant rate; **Scratch-E** trains the pruned architecture
from a fresh initialisation for the large model's epochs; **Scratch-B** for the same compute,
epochs × MACs(large)/MACs(pruned), capped (:func:`scratch_b_epochs`). The fresh
initialisation is the paper's (:func:`compstudy.models.cifar.init_weights`); a masked conv
draws with the fan of its surviving weights (:func:`sparse_scratch_init`,
``cifar/weight-level/cifar_E.py``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from .. import metrics
from ..errors import ConfigError, unknown_choice
from ..models import cifar as cm
from . import masks as mk

# Li et al.'s VGG-16-A as per-layer ratios of the 13 convs: first conv halved, last six halved.
VGG16_A_RATIOS = (0.5, 0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5)
# Li et al.'s CIFAR ResNet-56 per-stage ratios (res56prune.py) and the conv ids kept whole
# (id 1 = stem, conv1 of block b = 2 + 2b).
LI_STAGE_RATIOS = {"A": (0.1, 0.1, 0.1), "B": (0.6, 0.3, 0.1)}
RESNET56_SKIP_IDS = {"A": (16, 20, 38, 54), "B": (16, 18, 20, 34, 38, 54)}
REGIMES = ("finetune", "scratch_e", "scratch_b")


# ----------------------------------------------------------------------------- checks and counting


def check_ratio(name: str, ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ConfigError(f"{name} must lie in [0, 1), got {ratio!r}")
    return float(ratio)


def check_ratio_list(name: str, ratios: Sequence[float], expected: int, what: str) -> list[float]:
    if not isinstance(ratios, (list, tuple)) or len(ratios) != expected:
        n = len(ratios) if isinstance(ratios, (list, tuple)) else "not a list"
        raise ConfigError(f"{name} needs one ratio per {what} ({expected}), got {n}: {ratios!r}")
    return [check_ratio(f"{name}[{i}]", r) for i, r in enumerate(ratios)]


def n_keep(n: int, ratio: float, floor: int = 1) -> int:
    """Channels kept when pruning ``ratio`` of ``n``: Li et al.'s ``int(n·(1 − ratio))``, at
    least ``floor`` (1 in the paper; more keeps width-scaled nets from 1-channel layers) and
    at most ``n``."""
    return min(n, max(floor, int(n * (1 - check_ratio("pruning ratio", ratio)) + 1e-9)))


def scratch_b_epochs(epochs: float, macs_large: float, macs_pruned: float, cap: float = 2.0) -> float:
    """Scratch-B's budget: ``epochs · min(MACs(large)/MACs(pruned), cap)``, never below ``epochs``.

    Liu et al. give Scratch-B the large model's compute; on ImageNet they cap it at twice the
    epochs (``imagenet/l1-norm-pruning/main_B.py``), which keeps heavy pruning affordable.
    """
    if macs_pruned <= 0 or macs_large <= 0:
        raise ConfigError(f"MACs must be positive, got {macs_large} and {macs_pruned}")
    if cap < 1:
        raise ConfigError(f"the Scratch-B cap must be >= 1, got {cap}")
    return epochs * max(1.0, min(macs_large / macs_pruned, cap))


def _conv_output_sizes(model: nn.Module, input_size=(1, 3, 32, 32)) -> dict[nn.Conv2d, int]:
    sizes, hooks = {}, []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(
                lambda mod, _i, out: sizes.__setitem__(mod, out.shape[-1] * out.shape[-2])))
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(input_size))
    model.train(was)
    for h in hooks:
        h.remove()
    return sizes


def sparse_macs(model: nn.Module, input_size=(1, 3, 32, 32)) -> int:
    """MACs with conv layers counted by their nonzero weights only (the paper's count_flops)."""
    dense = metrics.count_macs(model, input_size)
    saved = sum(hw * (m.weight.numel() - int(torch.count_nonzero(m.weight)))
                for m, hw in _conv_output_sizes(model, input_size).items())
    return dense - saved


# ----------------------------------------------------------------------------- removing channels


def l1_keep(conv: nn.Conv2d, keep: int) -> torch.Tensor:
    """Sorted indices of the ``keep`` filters of largest L1 norm."""
    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
    return torch.topk(norms, keep).indices.sort().values


def _remove_filters(model: nn.Module, plan: Sequence[tuple[nn.Conv2d, torch.Tensor, set]]) -> None:
    """Remove in place, with Torch-Pruning, each conv's filters outside its kept index set.

    ``plan`` holds ``(conv, kept indices, expected)``; ``expected`` is the set of ``(layer,
    is_out_channels)`` the removal must touch, so a group that reaches further (e.g. into a
    residual sum) raises instead of silently cutting it. Kept indices are the unpruned model's:
    removing one conv's filters renumbers only its outputs and the next layer's inputs, never
    another conv's filters, so the convs can be pruned one after the other.
    """
    device = next(model.parameters()).device
    with torch.enable_grad():  # the graph is traced through autograd
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=torch.zeros(1, 3, 32, 32, device=device))
    layers = set(model.modules())
    for conv, kept, expected in plan:
        drop = sorted(set(range(conv.out_channels)) - set(torch.as_tensor(kept).tolist()))
        if not drop:
            continue
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=drop)
        touched = {(dep.target.module, graph.is_out_channel_pruning_fn(dep.handler))
                   for dep, _ in group if dep.target.module in layers}
        if touched != expected:
            raise RuntimeError(f"pruning {conv} would touch {touched}, expected {expected}")
        if not graph.check_pruning_group(group):
            raise ValueError(f"cannot remove every filter of {conv}")
        group.prune()


def _checked_spec(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, once ``cm.build(model.spec)`` is known to rebuild its exact shapes."""
    def shapes(m: nn.Module) -> dict[str, tuple]:
        return {k: tuple(v.shape) for k, v in m.state_dict().items()}
    if shapes(cm.build(model.spec)) != shapes(model):
        raise RuntimeError(f"spec {model.spec} does not rebuild the pruned model's shapes")
    return model.eval()


def prune_vgg(model: cm.CifarVGG, keep: Sequence[torch.Tensor]) -> cm.CifarVGG:
    """A pruned copy of a VGG holding only the conv channels ``keep[i]`` of each conv layer ``i``."""
    pairs = model.conv_bn_pairs()
    if len(keep) != len(pairs):
        raise ConfigError(f"VGG has {len(pairs)} conv layers, got {len(keep)} index sets")
    new = copy.deepcopy(model)
    pairs = new.conv_bn_pairs()
    consumers = [conv for conv, _ in pairs[1:]] + [new.classifier[0]]
    _remove_filters(new, [(conv, idx, {(conv, True), (bn, True), (nxt, False)})
                          for (conv, bn), nxt, idx in zip(pairs, consumers, keep)])
    new.spec = new.spec | {"layout": cm.with_widths(new.spec["layout"], new.conv_widths())}
    return _checked_spec(new)


def prune_resnet(model: cm.CifarResNet, keep: Sequence[torch.Tensor]) -> cm.CifarResNet:
    """A pruned copy of a ResNet whose block ``b`` keeps the inner channels ``keep[b]`` (conv1 out,
    bn1, conv2 in); conv2's outputs feed the residual sum and stay whole."""
    if len(keep) != len(model.blocks):
        raise ConfigError(f"ResNet has {len(model.blocks)} blocks, got {len(keep)} index sets")
    new = copy.deepcopy(model)
    _remove_filters(new, [(b.conv1, idx, {(b.conv1, True), (b.bn1, True), (b.conv2, False)})
                          for b, idx in zip(new.blocks, keep)])
    new.spec = new.spec | {"inner_widths": [b.conv1.out_channels for b in new.blocks]}
    return _checked_spec(new)


# ----------------------------------------------------------------------------- L1 filter pruning


def vgg_l1_keep(model: cm.CifarVGG, layer_ratios: Sequence[float], floor: int = 1) -> list[torch.Tensor]:
    """Kept filters of each VGG conv: the ``n_keep`` of largest L1 norm at its layer's ratio."""
    pairs = model.conv_bn_pairs()
    ratios = check_ratio_list("vgg_layer_ratios", layer_ratios, len(pairs), "VGG conv layer")
    return [l1_keep(conv, n_keep(conv.out_channels, r, floor)) for (conv, _), r in zip(pairs, ratios)]


def resnet56_skip_blocks(ids56: Sequence[int], depth: int) -> set[int]:
    """Map the paper's ResNet-56 kept-whole conv ids to block indices of ResNet-``depth``.

    Id ``2 + 2b`` is conv1 of block b of ResNet-56 (9 blocks per stage); a block keeps its stage
    and its relative position within the stage, rounded (ResNet-20: A → {2, 3, 6, 8}).
    """
    n = cm.blocks_per_stage(depth)
    out = set()
    for i in ids56:
        stage, pos = divmod((i - 2) // 2, 9)
        out.add(stage * n + int(round(pos * (n - 1) / 8)))
    return out


def resnet_l1_keep(model: cm.CifarResNet, stage_ratios: Sequence[float],
                   skip_blocks: set[int] = frozenset(), floor: int = 1) -> list[torch.Tensor]:
    """Kept inner channels of each block: all in ``skip_blocks``, else the ``n_keep`` conv1
    filters of largest L1 norm at the block's stage ratio."""
    ratios = check_ratio_list("resnet_stage_ratios", stage_ratios, 3, "ResNet stage")
    keep = []
    for b, (block, stage) in enumerate(zip(model.blocks, model.stage_of_block())):
        n = block.conv1.out_channels
        keep.append(torch.arange(n) if b in skip_blocks
                    else l1_keep(block.conv1, n_keep(n, ratios[stage], floor)))
    return keep


def li_resnet(model: cm.CifarResNet, variant: str, stage_ratios: Sequence[float] | None = None,
              floor: int = 1) -> cm.CifarResNet:
    """Li et al.'s ResNet-``variant`` (A or B) of ``model``: their kept-whole blocks and their
    stage ratios (or ``stage_ratios``), pruned by L1 norm."""
    if variant not in LI_STAGE_RATIOS:
        raise unknown_choice("ResNet variant of Li et al.", variant, LI_STAGE_RATIOS)
    skip = resnet56_skip_blocks(RESNET56_SKIP_IDS[variant], model.spec["depth"])
    ratios = LI_STAGE_RATIOS[variant] if stage_ratios is None else stage_ratios
    return prune_resnet(model, resnet_l1_keep(model, ratios, skip, floor))


# ----------------------------------------------------------------------------- network slimming


def add_bn_l1_subgradient(model: nn.Module, lam: float) -> None:
    """Network slimming's sparsity term: grad(γ) += λ·sign(γ) for every BatchNorm2d scale."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.weight.grad is not None:
            m.weight.grad.add_(lam * torch.sign(m.weight.detach()))


def bn_l1_hook(model: nn.Module, lam: float) -> Callable[[], None]:
    """The sparsity term as an ``after_backward`` hook of :func:`compstudy.train.fit`."""
    if not lam >= 0:
        raise ConfigError(f"the slimming penalty λ must be >= 0, got {lam!r}")
    return lambda: add_bn_l1_subgradient(model, lam)


def slimming_keep(model: cm.CifarVGG, ratio: float, min_keep: int = 1) -> list[torch.Tensor]:
    """Channels with |γ| above the global ⌊ratio·N⌋-th smallest |γ| (at least ``min_keep`` per layer)."""
    check_ratio("slim_ratio", ratio)
    bns = [bn for _, bn in model.conv_bn_pairs()]
    gammas = torch.cat([bn.weight.detach().abs() for bn in bns])
    k = int(ratio * len(gammas) + 1e-9)
    threshold = gammas.sort().values[k - 1] if k > 0 else -1.0
    keep = []
    for bn in bns:
        g = bn.weight.detach().abs()
        idx = torch.nonzero(g > threshold).flatten()
        if len(idx) < min_keep:
            idx = torch.topk(g, min(min_keep, len(g))).indices.sort().values
        keep.append(idx)
    return keep


def uniform_vgg_like(num_classes: int, target_params: int, max_width: float = 1.0,
                     layout: str = "vgg16") -> cm.CifarVGG:
    """VGG-16 with one width multiplier in (0, max_width] chosen (bisection) to match
    ``target_params``: the uniformly thinned control of Liu et al.'s section 5."""
    lo, hi = 0.01, max_width
    for _ in range(24):
        mid = (lo + hi) / 2
        if metrics.count_parameters(cm.vgg(num_classes, layout, mid)) < target_params:
            lo = mid
        else:
            hi = mid
    below, above = cm.vgg(num_classes, layout, lo), cm.vgg(num_classes, layout, hi)
    return min((below, above), key=lambda m: abs(metrics.count_parameters(m) - target_params))


# ----------------------------------------------------------------------------- unstructured


def sparse_scratch_init(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """The paper's scratch init of masked convs: std sqrt(2/n), n = k²·C_out·density, then the mask."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            conv = modules[name]
            density = max(float(mask.float().mean()), 1e-6)
            n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels * density
            conv.weight.normal_(0, math.sqrt(2.0 / n)).mul_(mask.to(conv.weight.dtype))
    return model


def mask_hooks(model: nn.Module, masks: Mapping[str, torch.Tensor] | None):
    """``(after_backward, after_step)`` hooks of :func:`compstudy.train.fit` that keep the
    masked weights at zero: their gradients are zeroed, and the mask is re-applied after the
    step (weight decay and momentum cannot revive them). ``(None, None)`` without masks."""
    if not masks:
        return None, None
    return (lambda: mk.zero_pruned_gradients(model, masks)), (lambda: mk.apply_masks(model, masks))


def fresh_copy(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """The architecture of ``model`` at the paper's scratch initialisation (torch's global RNG):
    Scratch-E and Scratch-B start from it; masked convs keep ``model``'s mask."""
    fresh = cm.build(model.spec)
    if masks:
        sparse_scratch_init(fresh, masks)
    return fresh

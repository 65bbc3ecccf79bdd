"""Chapter 2: pruning as it is usually done, and the same architectures trained from scratch.

Methods (Liu et al. 2019, "Rethinking the value of network pruning"; papers.md §2):

``l1_vgg`` / ``l1_resnet`` — predefined structured pruning (Li et al. 2017)
    Per conv layer (VGG) or per stage (ResNet, first conv of each basic block only) a human-set
    ratio; in each layer the filters of largest L1 norm ‖W[i]‖₁ are kept (one shot) and the
    others are *physically removed* together with their BN channel and the next layer's input
    channels (:func:`prune_vgg`, :func:`prune_resnet`): Torch-Pruning's ``DependencyGraph``
    traces the network and removes every coupled channel; the groups are checked to touch only
    the expected layers (ResNet: block-inner channels only, never the residual).
``slimming`` — automatic structured pruning (Liu et al. 2017)
    Sparsity training adds λ·sign(γ) to the gradient of every BN scale γ
    (:func:`add_bn_l1_subgradient`); then one global threshold, the ⌊p·N⌋-th smallest |γ|
    over all conv BNs, keeps the channels with |γ| above it (:func:`slimming_keep`).
``unstructured`` — magnitude pruning (Han et al. 2015)
    One global threshold over all conv weights; the mask is kept fixed through training
    (pruned weights and their gradients are zeroed every step). Dense shapes are kept, so
    its cost is reported as nonzeros and nonzero-conv MACs, never timed as a speed-up.

Regimes for every pruned architecture: ``finetune`` (inherited weights, constant small LR),
``scratch_e`` (fresh init, the large model's epochs), ``scratch_b`` (fresh init, epochs ×
MACs(large)/MACs(pruned), capped, :func:`scratch_b_epochs`), and for slimming ``uniform_e``:
a uniformly thinned VGG with the parameters of the slimmed one, from scratch (pruning as
architecture search).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F

from . import cifar_models as cm
from . import config, data, metrics, paths, train
from .errors import ConfigError, unknown_choice
from .seeding import seed_everything

METHODS = ("l1_vgg", "l1_resnet", "slimming", "unstructured")
REGIMES = ("finetune", "scratch_e", "scratch_b")
SCHEDULES = ("step", "constant", "cosine")
VERSION = 1  # bump when training code changes what a cached large model holds
ARTIFACT_SUBDIR = "02_pruning_value"

# Li et al.'s VGG-16-A as per-layer ratios of the 13 convs: first conv halved, last six halved.
VGG16_A_RATIOS = [0.5, 0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
# ResNet-56 conv ids kept intact (res56prune.py numbering: id 1 = stem, block b's conv1 = 2 + 2b).
RESNET56_SKIP_IDS = {"A": [16, 20, 38, 54], "B": [16, 18, 20, 34, 38, 54]}

# Paper numbers (papers.md §2.3): (unpruned, FT, Scratch-E, Scratch-B) as "mean ± std" text.
PAPER = {
    "l1_vgg": ("CIFAR-10 VGG-16-A (L1), 5 runs",
               ("93.63 ± 0.16", "93.41 ± 0.12", "93.62 ± 0.11", "93.78 ± 0.15")),
    "l1_resnet:A": ("CIFAR-10 ResNet-56-A (L1), 5 runs",
                    ("93.14 ± 0.12", "92.97 ± 0.17", "92.96 ± 0.26", "93.09 ± 0.14")),
    "l1_resnet:B": ("CIFAR-10 ResNet-56-B (L1), 5 runs",
                    ("93.14 ± 0.12", "92.67 ± 0.14", "92.54 ± 0.19", "93.05 ± 0.18")),
    "slimming": ("CIFAR-10 VGG-19 slimming 70 % (recalled)",
                 ("≈93.5", "≈93.6", "≈93.3", "≈93.8")),
    "unstructured": ("ImageNet VGG-16 unstructured 60 % (single run)",
                     ("—", "73.63", "71.50", "73.42")),
}


# ----------------------------------------------------------------------------- validation


def check_ratio(name: str, ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise ConfigError(f"{name} must lie in [0, 1), got {ratio!r}")
    return float(ratio)


def check_ratio_list(name: str, ratios: Sequence[float], expected: int, what: str) -> list[float]:
    if not isinstance(ratios, (list, tuple)) or len(ratios) != expected:
        n = len(ratios) if isinstance(ratios, (list, tuple)) else "not a list"
        raise ConfigError(f"{name} needs one ratio per {what} ({expected}), got {n}: {ratios!r}")
    return [check_ratio(f"{name}[{i}]", r) for i, r in enumerate(ratios)]


def check_method(method: str) -> str:
    if method not in METHODS:
        raise unknown_choice("pruning method", method, METHODS)
    return method


def validate_config(params: Mapping[str, Any]) -> None:
    """Every user-fixable mistake of a chapter-2 config, as one-line ConfigErrors, before training."""
    for m in params["methods"]:
        check_method(m)
    for r in params["regimes"]:
        if r not in REGIMES:
            raise unknown_choice("training regime", r, REGIMES)
    n_convs = sum(w != "M" for w in cm.VGG_LAYOUTS["vgg16"])
    check_ratio_list("vgg_layer_ratios", params["vgg_layer_ratios"], n_convs, "VGG-16 conv layer")
    cm.blocks_per_stage(params["resnet_depth"])
    for variant, ratios in params["resnet_stage_ratios"].items():
        check_ratio_list(f"resnet_stage_ratios[{variant}]", ratios, 3, "ResNet stage")
        if variant not in RESNET56_SKIP_IDS:
            raise unknown_choice("ResNet variant (its kept-intact layers)", variant, RESNET56_SKIP_IDS)
    check_ratio("slim_ratio", params["slim_ratio"])
    check_ratio("unstructured_sparsity", params["unstructured_sparsity"])
    for key in ("vgg_width", "resnet_width"):
        if not params[key] > 0:
            raise ConfigError(f"{key} must be > 0, got {params[key]!r}")
    if params["scratch_b_cap"] < 1:
        raise ConfigError(f"scratch_b_cap must be >= 1, got {params['scratch_b_cap']!r}")
    if not params["seeds"]:
        raise ConfigError("seeds must name at least one seed")
    for key in ("base_schedule", "ft_schedule"):
        if params[key] not in SCHEDULES:
            raise unknown_choice(f"{key}", params[key], SCHEDULES)


# ----------------------------------------------------------------------------- counting


def n_keep(n: int, ratio: float) -> int:
    """Channels kept when pruning ``ratio`` of ``n`` (Li et al.: int(n·(1 − ratio)), at least 1)."""
    return max(1, int(n * (1 - check_ratio("pruning ratio", ratio)) + 1e-9))


def scratch_b_epochs(base_epochs: int, macs_large: float, macs_pruned: float, cap: float = 2.0) -> int:
    """Scratch-B budget: ⌊E · min(MACs(large)/MACs(pruned), cap)⌋ (never below E)."""
    if macs_pruned <= 0 or macs_large <= 0:
        raise ConfigError(f"MACs must be positive, got {macs_large} and {macs_pruned}")
    return max(base_epochs, int(base_epochs * min(macs_large / macs_pruned, cap) + 1e-9))


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


# ----------------------------------------------------------------------------- structured


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


def vgg_l1_keep(model: cm.CifarVGG, layer_ratios: Sequence[float]) -> list[torch.Tensor]:
    pairs = model.conv_bn_pairs()
    ratios = check_ratio_list("vgg_layer_ratios", layer_ratios, len(pairs), "VGG conv layer")
    return [l1_keep(conv, n_keep(conv.out_channels, r)) for (conv, _), r in zip(pairs, ratios)]


def resnet56_skip_blocks(ids56: Sequence[int], depth: int) -> set[int]:
    """Map the paper's ResNet-56 kept-intact conv ids to block indices of ResNet-``depth``.

    Id ``2 + 2b`` is conv1 of block b of ResNet-56 (9 blocks per stage); a block keeps its stage
    and its relative position within the stage, rounded (ResNet-20: A → {2, 3, 6, 8}).
    """
    n = cm.blocks_per_stage(depth)
    out = set()
    for i in ids56:
        b56 = (i - 2) // 2
        stage, pos = divmod(b56, 9)
        out.add(stage * n + int(round(pos * (n - 1) / 8)))
    return out


def resnet_l1_keep(model: cm.CifarResNet, stage_ratios: Sequence[float],
                   skip_blocks: set[int] = frozenset()) -> list[torch.Tensor]:
    ratios = check_ratio_list("resnet_stage_ratios", stage_ratios, 3, "ResNet stage")
    keep = []
    for b, (block, stage) in enumerate(zip(model.blocks, model.stage_of_block())):
        n = block.conv1.out_channels
        keep.append(torch.arange(n) if b in skip_blocks else l1_keep(block.conv1, n_keep(n, ratios[stage])))
    return keep


def add_bn_l1_subgradient(model: nn.Module, lam: float) -> None:
    """Network slimming's sparsity term: grad(γ) += λ·sign(γ) for every BatchNorm2d scale."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.weight.grad is not None:
            m.weight.grad.add_(lam * torch.sign(m.weight.detach()))


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
            idx = torch.topk(g, min_keep).indices.sort().values
        keep.append(idx)
    return keep


# ----------------------------------------------------------------------------- unstructured


def conv_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def global_magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """One global threshold over all conv weights: exactly ⌊sparsity·N⌋ smallest |w| masked."""
    check_ratio("unstructured_sparsity", sparsity)
    weights = conv_weights(model)
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    k = int(sparsity * len(flat) + 1e-9)
    mask_flat = torch.ones_like(flat)
    if k:
        mask_flat[torch.topk(flat, k, largest=False).indices] = 0
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = mask_flat[start:start + w.numel()].view_as(w).clone()
        start += w.numel()
    return masks


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask)


def sparse_scratch_init(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """The paper's scratch init for masked convs: fan n = k²·C_out·density, then the mask."""
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            conv = modules[name.removesuffix(".weight")]
            density = max(float(mask.mean()), 1e-6)
            n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels * density
            conv.weight.normal_(0, math.sqrt(2.0 / n)).mul_(mask)


# ----------------------------------------------------------------------------- training


def train_model(model: nn.Module, loader, epochs: int, lr: float, schedule: str = "step",
                weight_decay: float = 1e-4, bn_l1: float = 0.0,
                masks: Mapping[str, torch.Tensor] | None = None) -> float:
    """SGD (momentum 0.9) with cross-entropy; returns seconds.

    ``schedule``: ``step`` (×0.1 at 50 % and 75 % of the steps, the paper's), ``constant``
    (fine-tuning) or ``cosine``. ``bn_l1`` > 0 adds the slimming sub-gradient after backward;
    ``masks`` zero the masked weights' gradients before and the weights after every step.
    """
    if schedule not in SCHEDULES:
        raise unknown_choice("schedule", schedule, SCHEDULES)
    start = time.perf_counter()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    total = max(1, epochs * len(loader))
    if schedule == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [total // 2, (3 * total) // 4], 0.1)
    elif schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    else:
        sched = None
    params = dict(model.named_parameters())
    if masks:
        apply_masks(model, masks)
    model.train()
    for _ in range(epochs):
        for images, targets in loader:
            loss = F.cross_entropy(model(images), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if bn_l1:
                add_bn_l1_subgradient(model, bn_l1)
            if masks:
                for name, mask in masks.items():
                    params[name].grad.mul_(mask)
            opt.step()
            if sched is not None:
                sched.step()
            if masks:
                apply_masks(model, masks)
    model.eval()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- the study


def uniform_vgg_like(num_classes: int, target_params: int, max_width: float = 1.0) -> cm.CifarVGG:
    """VGG-16 with one width multiplier in (0, max_width] chosen (bisection) to match ``target_params``."""
    lo, hi = 0.01, max_width
    for _ in range(24):
        mid = (lo + hi) / 2
        if metrics.count_parameters(cm.vgg(num_classes, "vgg16", mid)) < target_params:
            lo = mid
        else:
            hi = mid
    below, above = cm.vgg(num_classes, "vgg16", lo), cm.vgg(num_classes, "vgg16", hi)
    return min((below, above), key=lambda m: abs(metrics.count_parameters(m) - target_params))


def load_splits(name: str, train_per_class: int, test_per_class: int, seed: int):
    """Train and test sets. Synthetic sets generate ``*_per_class`` images; real sets (digits,
    CIFAR) take a seeded ``train_per_class`` subset of their train split (-1: all) and their
    whole test split."""
    if name in data.GENERATED:
        return (data.load_dataset(name, "train", train_per_class, seed),
                data.load_dataset(name, "test", test_per_class, seed))
    train_set = data.load_dataset(name, "train")
    return data.few_shot(train_set, train_per_class, seed), data.load_dataset(name, "test")


def unit_seed(unit: Mapping[str, Any]) -> int:
    return int(config.digest(dict(unit)), 16) % 2**31


class Study:
    """Data, cached large models and one method per unit of the chapter-2 sweep.

    ``params`` are the notebook's resolved parameters (see ``notebooks/02_pruning_value.py``).
    """

    def __init__(self, params: Mapping[str, Any], progress: bool = False):
        validate_config(params)
        self.p = dict(params)
        self.progress = progress
        self.train_set, self.test_set = load_splits(params["dataset"], params["train_per_class"],
                                                    params["test_per_class"], params["seed"])
        self.num_classes = len(self.train_set.classes)
        self.test_loader = data.make_loader(self.test_set, 256, shuffle=False)
        self._large: dict[tuple[str, int], tuple[nn.Module, dict]] = {}

    # -- names
    def targets(self) -> list[tuple[str, str]]:
        """(method, architecture label) of every pruned model."""
        p, out = self.p, []
        depth = p["resnet_depth"]
        for method in p["methods"]:
            if method == "l1_vgg":
                out.append((method, "VGG-16-A"))
            elif method == "l1_resnet":
                out += [(method, f"ResNet-{depth}-{v}") for v in p["resnet_stage_ratios"]]
            elif method == "slimming":
                out.append((method, f"VGG-16 slimmed {round(100 * p['slim_ratio'])}%"))
            else:
                out.append((method, f"VGG-16 {round(100 * p['unstructured_sparsity'])}% sparse"))
        return out

    def large_kind(self, method: str) -> str:
        return {"l1_vgg": "vgg", "unstructured": "vgg", "slimming": "vgg_sparse",
                "l1_resnet": "resnet"}[check_method(method)]

    def large_label(self, method: str) -> str:
        return {"vgg": "VGG-16", "vgg_sparse": "VGG-16 (sparsity-trained)",
                "resnet": f"ResNet-{self.p['resnet_depth']}"}[self.large_kind(method)]

    def units(self) -> list[dict[str, Any]]:
        """Every row of the sweep: large models first, then each pruned model × regime × seed."""
        out = []
        for seed in self.p["seeds"]:
            for method in dict.fromkeys(m for m, _ in self.targets()):
                out.append({"method": method, "arch": self.large_label(method), "regime": "unpruned", "seed": seed})
            for method, arch in self.targets():
                regimes = list(self.p["regimes"])
                if method == "slimming" and self.p["uniform_check"]:
                    regimes.append("uniform_e")
                out += [{"method": method, "arch": arch, "regime": r, "seed": seed} for r in regimes]
        return out

    # -- models
    def loader(self, seed: int):
        return data.make_loader(self.train_set, self.p["batch_size"], shuffle=True, seed=seed,
                                augment=True, drop_last=True)

    def fresh_large(self, kind: str) -> nn.Module:
        if kind == "resnet":
            return cm.resnet(self.num_classes, self.p["resnet_depth"], self.p["resnet_width"])
        return cm.vgg(self.num_classes, "vgg16", self.p["vgg_width"])

    def large_key(self, kind: str, seed: int) -> dict[str, Any]:
        p = self.p
        return {"kind": kind, "seed": seed, "version": VERSION, "data_version": data.GENERATOR_VERSION,
                "arch": self.fresh_large(kind).spec,
                "data": [p["dataset"], p["train_per_class"], p["seed"]],
                "train": [p["base_epochs"], p["base_lr"], p["base_schedule"], p["weight_decay"],
                          p["batch_size"], p["slim_lambda"] if kind == "vgg_sparse" else 0.0]}

    def large(self, kind: str, seed: int) -> tuple[nn.Module, dict]:
        """The trained large model (cached in memory and under artifacts/, keyed by its digest)."""
        if (kind, seed) in self._large:
            return self._large[(kind, seed)]
        key = self.large_key(kind, seed)
        path = paths.ARTIFACTS_DIR / ARTIFACT_SUBDIR / f"{kind}-s{seed}-{config.digest(key)}.pt"
        if path.exists():
            model, info = cm.load_model(path)
        else:
            seed_everything(unit_seed(key))
            model = self.fresh_large(kind)
            seconds = train_model(model, self.loader(seed), self.p["base_epochs"], self.p["base_lr"],
                                  self.p["base_schedule"], self.p["weight_decay"],
                                  bn_l1=self.p["slim_lambda"] if kind == "vgg_sparse" else 0.0)
            info = {"accuracy": train.evaluate(model, self.test_loader)["accuracy"],
                    "train_seconds": seconds, "epochs": self.p["base_epochs"]}
            cm.save_model(model, path, info)
        self._large[(kind, seed)] = (model, info)
        return model, info

    def prune(self, method: str, arch: str, large: nn.Module):
        """(pruned model with inherited weights, masks or None) of one target."""
        p = self.p
        if method == "l1_vgg":
            return prune_vgg(large, vgg_l1_keep(large, p["vgg_layer_ratios"])), None
        if method == "l1_resnet":
            variant = arch.rsplit("-", 1)[1]
            skip = resnet56_skip_blocks(RESNET56_SKIP_IDS[variant], p["resnet_depth"])
            return prune_resnet(large, resnet_l1_keep(large, p["resnet_stage_ratios"][variant], skip)), None
        if method == "slimming":
            return prune_vgg(large, slimming_keep(large, p["slim_ratio"])), None
        model = cm.build(large.spec)
        model.load_state_dict(large.state_dict())
        masks = global_magnitude_masks(model, p["unstructured_sparsity"])
        apply_masks(model, masks)
        return model.eval(), masks

    def pruned_arch(self, method: str, arch: str, seed: int) -> nn.Module:
        large, _ = self.large(self.large_kind(method), seed)
        return self.prune(method, arch, large)[0]

    # -- one unit
    def run(self, unit: Mapping[str, Any]) -> dict[str, Any]:
        p, method, regime, seed = self.p, unit["method"], unit["regime"], unit["seed"]
        large, info = self.large(self.large_kind(method), seed)
        macs_large = metrics.count_macs(large)
        if regime == "unpruned":
            return self._row(large, None, info["accuracy"], info["epochs"], info["train_seconds"], macs_large)
        pruned, masks = self.prune(method, unit["arch"], large)
        macs = sparse_macs(pruned) if masks else metrics.count_macs(pruned)
        seed_everything(unit_seed(unit))
        loader = self.loader(unit_seed(unit))
        if regime == "finetune":
            model, epochs, lr, sched = pruned, p["ft_epochs"], p["ft_lr"], p["ft_schedule"]
        else:
            if regime == "uniform_e":
                model = uniform_vgg_like(self.num_classes, metrics.count_parameters(pruned), self.p["vgg_width"])
            else:
                model = cm.build(pruned.spec)
                if masks:
                    sparse_scratch_init(model, masks)
            epochs = (scratch_b_epochs(p["base_epochs"], macs_large, macs, p["scratch_b_cap"])
                      if regime == "scratch_b" else p["base_epochs"])
            lr, sched = p["base_lr"], p["base_schedule"]
        seconds = train_model(model, loader, epochs, lr, sched, p["weight_decay"], masks=masks)
        accuracy = train.evaluate(model, self.test_loader)["accuracy"]
        if regime == "uniform_e":
            macs = metrics.count_macs(model)
        return self._row(model, masks, accuracy, epochs, seconds, macs_large, macs)

    def _row(self, model, masks, accuracy, epochs, seconds, macs_large, macs=None) -> dict[str, Any]:
        macs = metrics.count_macs(model) if macs is None else macs
        widths = (model.conv_widths() if isinstance(model, cm.CifarVGG)
                  else model.spec["inner_widths"])
        return {"accuracy": accuracy, "params": metrics.count_parameters(model),
                "nonzeros": metrics.count_nonzero_parameters(model), "macs": macs,
                "mac_reduction": macs_large / macs, "epochs": epochs,
                "train_seconds": round(seconds, 2), "widths": json.dumps(widths)}

    # -- measurement of structured models
    def structured_models(self, seed: int) -> dict[str, tuple[str, nn.Module]]:
        """label → (large label, model) of every structured model (large ones included)."""
        out = {}
        for method, arch in self.targets():
            if method == "unstructured":
                continue
            large_label = self.large_label(method)
            large, _ = self.large(self.large_kind(method), seed)
            out.setdefault(large_label, (large_label, large))
            pruned = self.prune(method, arch, large)[0]
            out[arch] = (large_label, pruned)
            if method == "slimming" and self.p["uniform_check"]:
                out["VGG-16 uniform (params of slimmed)"] = (
                    large_label, uniform_vgg_like(self.num_classes, metrics.count_parameters(pruned), self.p["vgg_width"]))
        return out


def measure_speed(model: nn.Module, batch_sizes: Sequence[int], min_run_time: float,
                  num_threads: int = 2) -> dict[str, float]:
    """Params, MACs and median latency (ms) at each batch size, threads fixed."""
    row = {"params": metrics.count_parameters(model), "macs": metrics.count_macs(model)}
    for b in batch_sizes:
        row[f"latency_ms_b{b}"] = metrics.measure_latency(model, b, num_threads=num_threads,
                                                          min_run_time=min_run_time)["median_ms"]
    return row


def speedup_table(frame: pd.DataFrame, batch_sizes: Sequence[int]) -> pd.DataFrame:
    """Per structured model: MAC reduction, measured speed-up per batch size and their ratio."""
    rows = []
    base = frame.set_index("model")
    for model, r in base.iterrows():
        ref = base.loc[r["large"]]
        row = {"model": model, "large": r["large"], "params": r["params"], "macs": r["macs"],
               "mac_reduction": ref["macs"] / r["macs"]}
        for b in batch_sizes:
            s = ref[f"latency_ms_b{b}"] / r[f"latency_ms_b{b}"]
            row[f"speedup_b{b}"] = s
            row[f"speedup_over_mac_b{b}"] = s / row["mac_reduction"]
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- tables


REGIME_COLUMNS = {"unpruned": "unpruned", "finetune": "fine-tuned", "scratch_e": "Scratch-E",
                  "scratch_b": "Scratch-B", "uniform_e": "uniform, Scratch-E"}


def _fmt(values: pd.Series) -> str:
    values = 100 * values.dropna()
    if values.empty:
        return "—"
    std = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.2f} ± {std:.2f}" if len(values) > 1 else f"{values.mean():.2f}"


def paper_form_table(frame: pd.DataFrame, study: Study, method: str) -> pd.DataFrame:
    """architecture | unpruned | fine-tuned | Scratch-E | Scratch-B (accuracy %, mean ± std
    over seeds) for one method, with the paper's row beside ours."""
    rows = []
    for m, arch in study.targets():
        if m != method:
            continue
        ours = frame[(frame.method == m) & (frame.arch == arch)]
        large = frame[(frame.method == m) & (frame.regime == "unpruned")]
        row = {"architecture": arch, "source": f"ours ({len(ours.seed.unique())} seeds)",
               "unpruned": _fmt(large.accuracy)}
        for regime in ("finetune", "scratch_e", "scratch_b", "uniform_e"):
            if regime == "uniform_e" and method != "slimming":
                continue
            row[REGIME_COLUMNS[regime]] = _fmt(ours[ours.regime == regime].accuracy)
        rows.append(row)
        key = f"{m}:{arch.rsplit('-', 1)[1]}" if m == "l1_resnet" else m
        if key in PAPER:
            label, numbers = PAPER[key]
            rows.append({"architecture": arch, "source": f"paper: {label}",
                         **dict(zip(["unpruned", "fine-tuned", "Scratch-E", "Scratch-B"], numbers))})
    return pd.DataFrame(rows).set_index(["architecture", "source"]).fillna("")


def regime_differences(frame: pd.DataFrame) -> pd.DataFrame:
    """Per pruned model: mean accuracy differences (points) between regimes, paired by seed,
    with the standard error of the paired difference."""
    pruned = frame[frame.regime != "unpruned"]
    wide = pruned.pivot_table(index=["method", "arch", "seed"], columns="regime", values="accuracy")
    pairs = [("scratch_b", "finetune"), ("scratch_e", "finetune"), ("scratch_b", "scratch_e"),
             ("scratch_e", "uniform_e")]
    rows = []
    for (method, arch), group in wide.groupby(level=[0, 1]):
        for a, b in pairs:
            if a in group and b in group and group[[a, b]].notna().all(axis=None):
                d = 100 * (group[a] - group[b])
                se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
                rows.append({"method": method, "arch": arch, "comparison": f"{a} − {b}",
                             "mean_diff_points": d.mean(), "se_points": se, "n_seeds": len(d)})
    return pd.DataFrame(rows)

"""Sparse source models: five ways to zero most convolution weights of a pretrained ResNet.

Every family starts from the dense upstream model of the zoo and continues training on the
source task with SGD (the zoo's CNN recipe: momentum 0.9, Nesterov, label smoothing 0.1,
cosine learning rate over the run):

``oneshot``
    one global magnitude prune to the target sparsity, then a short fine-tune.
``gmp``
    gradual magnitude pruning (Zhu & Gupta 2017): every ``prune_every`` steps a global
    magnitude prune to the cubic schedule s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3,
    then training with the final mask fixed.
``lottery``
    iterative magnitude pruning with weight rewinding (Frankle et al.): save the weights W_k
    after ``rewind_step`` steps, train a round, prune 20 % of the surviving weights, rewind
    the survivors (and every other tensor) to W_k, retrain; a round whose 20 % step would
    jump past an asked sparsity prunes exactly to it. One trajectory yields every sparsity.
``acdc``
    alternating compressed / decompressed training (Peste et al. 2021): dense phases and
    sparse phases (global top-k magnitude mask chosen at the phase start), ending with a
    longer sparse phase.
``rigl``
    RigL (Evci et al. 2020) at a fixed per-layer (uniform) sparsity: every ``delta`` steps,
    until 75 % of training, each layer drops the fraction a_t = (a/2)(1 + cos(pi t / T_end))
    of its smallest-magnitude active weights and regrows as many inactive weights with the
    largest gradient magnitude, new weights starting at 0.

**Sparsity**, as reported everywhere in the study, is :func:`conv_sparsity`: the fraction of
exactly-zero entries over the weights of *all* ``nn.Conv2d`` layers (stem, every block and
every downsample shortcut); the final fully connected layer, biases and BatchNorm are
excluded and never pruned (the convention of the paper's ``check_sparsity``). Masks are
explicit boolean tensors, one per conv weight, re-applied after every optimiser step, so a
pruned weight stays exactly zero through fine-tuning.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from . import config, data, paths, train
from .errors import ConfigError, unknown_choice
from .results import atomic_write_bytes
from .seeding import seed_everything

FAMILIES = ("oneshot", "gmp", "lottery", "acdc", "rigl")
SPARSE_VERSION = 2  # bump when the code changes what a cached sparse model holds (2: own batches per sparsity)

Masks = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- bookkeeping


def conv_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weight of every ``nn.Conv2d`` of ``model``, by module name (FC excluded)."""
    return {name: m.weight for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def conv_sparsity(model: nn.Module) -> float:
    """zeros / total over the weights of all Conv2d layers (the study's sparsity)."""
    weights = conv_weights(model).values()
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total


def masks_of(model: nn.Module) -> Masks:
    """Masks read off the weights: True where a conv weight is non-zero."""
    return {name: (w != 0) for name, w in conv_weights(model).items()}


def mask_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero every conv weight outside its mask (in place)."""
    for name, w in conv_weights(model).items():
        if name in masks:
            w.mul_(masks[name].to(w.dtype))


def check_sparsity_value(sparsity: float) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ConfigError(f"sparsity must lie in [0, 1), got {sparsity!r}")
    return float(sparsity)


def global_magnitude_masks(model: nn.Module, sparsity: float,
                           current: Mapping[str, torch.Tensor] | None = None) -> Masks:
    """Prune the ``round(sparsity * N)`` smallest-|w| conv weights over all layers at once.

    Weights already outside ``current`` count as smallest, so masks only shrink. Ties at the
    threshold are broken by position (as a stable sort would), so the count is exact; a
    k-th-value selection instead of a full sort keeps this fast on 11 M weights.
    """
    check_sparsity_value(sparsity)
    weights = conv_weights(model)
    scores = []
    for name, w in weights.items():
        s = w.detach().abs().flatten().double()
        if current is not None and name in current:
            s = torch.where(current[name].flatten(), s, torch.full_like(s, -1.0))
        scores.append(s)
    flat = torch.cat(scores)
    k = int(round(sparsity * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if k:
        threshold = torch.kthvalue(flat, k).values
        keep = flat >= threshold
        ties = torch.nonzero(flat == threshold).flatten()
        keep[ties[:k - int((flat < threshold).sum())]] = False
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start:start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def layerwise_magnitude_masks(model: nn.Module, sparsity: float) -> Masks:
    """Each conv layer keeps its ``1 - sparsity`` largest-|w| weights (uniform distribution)."""
    check_sparsity_value(sparsity)
    masks = {}
    for name, w in conv_weights(model).items():
        flat = w.detach().abs().flatten()
        k = int(round(sparsity * flat.numel()))
        keep = torch.ones_like(flat, dtype=torch.bool)
        if k:
            keep[torch.sort(flat, stable=True).indices[:k]] = False
        masks[name] = keep.view_as(w)
    return masks


def gmp_schedule(step: int, final_sparsity: float, initial_sparsity: float = 0.0,
                 start_step: int = 0, n_prunes: int = 10, prune_every: int = 10) -> float:
    """Zhu & Gupta's cubic sparsity target at ``step`` (clamped outside [t0, t0 + n dt])."""
    span = n_prunes * prune_every
    progress = min(max((step - start_step) / span, 0.0), 1.0)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class SparseRecipe:
    """Step counts and optimiser of every family (steps of ``batch_size`` source images).

    Args:
        steps: training steps of oneshot (fine-tune), gmp, acdc and rigl.
        lr: peak SGD learning rate (cosine to 0 over each run).
        gmp_prune_every / gmp_end_fraction: dt and the fraction of ``steps`` over which the
            cubic schedule runs (from step 0).
        lottery_round_steps / lottery_rewind_step / lottery_rate: IMP round length, the step
            whose weights survivors rewind to, and the fraction of survivors pruned per round.
        acdc_phase_steps: length of each dense or sparse phase; the remaining steps after the
            alternation form the final sparse phase.
        rigl_delta / rigl_alpha / rigl_end_fraction: update period, initial drop fraction and
            the fraction of ``steps`` after which the topology is frozen.
    """

    steps: int = 60
    lr: float = 0.02
    batch_size: int = 64
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    gmp_prune_every: int = 5
    gmp_end_fraction: float = 0.75
    lottery_round_steps: int = 15
    lottery_rewind_step: int = 5
    lottery_rate: float = 0.2
    acdc_phase_steps: int = 10
    rigl_delta: int = 10
    rigl_alpha: float = 0.3
    rigl_end_fraction: float = 0.75


def _batches(images: data.ImageSet, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless augmented, shuffled source batches (a new shuffle each pass)."""
    epoch = 0
    while True:
        loader = data.make_loader(images, batch_size, shuffle=True, seed=seed + epoch,
                                  augment=True, drop_last=True)
        yield from loader
        epoch += 1


def _optimizer(model: nn.Module, recipe: SparseRecipe, steps: int):
    settings = train.FitSettings(epochs=1, lr=recipe.lr, optimizer="sgd",
                                 weight_decay=recipe.weight_decay)
    opt = train.make_optimizer(model.parameters(), settings)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    return opt, sched


def train_steps(model: nn.Module, batches: Iterator, steps: int, recipe: SparseRecipe,
                masks: Callable[[], Mapping[str, torch.Tensor] | None] = lambda: None,
                before_step: Callable[[int], None] | None = None,
                after_backward: Callable[[int], None] | None = None) -> list[float]:
    """``steps`` SGD steps; the masks returned by ``masks()`` are re-applied after each step.

    ``before_step(t)`` may change the masks (GMP, AC/DC); ``after_backward(t)`` sees the
    dense gradients before the optimiser step (RigL). Returns the loss of every step.
    """
    opt, sched = _optimizer(model, recipe, steps)
    model.train()
    losses = []
    current = masks()
    if current is not None:
        apply_masks(model, current)
    for t in range(steps):
        if before_step is not None:
            before_step(t)
            current = masks()
            if current is not None:
                apply_masks(model, current)
        images, labels = next(batches)
        loss = F.cross_entropy(model(images), labels, label_smoothing=recipe.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward(t)
            current = masks()
        opt.step()
        sched.step()
        if current is not None:
            apply_masks(model, current)
        losses.append(loss.item())
    model.eval()
    return losses


def oneshot(model: nn.Module, sparsity: float, batches: Iterator, recipe: SparseRecipe) -> nn.Module:
    """Global magnitude prune once, then fine-tune ``recipe.steps`` with the mask fixed."""
    masks = global_magnitude_masks(model, sparsity)
    train_steps(model, batches, recipe.steps, recipe, masks=lambda: masks)
    return model


def gmp(model: nn.Module, sparsity: float, batches: Iterator, recipe: SparseRecipe) -> nn.Module:
    """Gradual magnitude pruning on the cubic schedule, during ``recipe.steps`` of training."""
    dt = recipe.gmp_prune_every
    n = max(1, int(recipe.gmp_end_fraction * recipe.steps) // dt)
    state: dict[str, Masks | None] = {"masks": None}

    def before(t: int) -> None:
        if t % dt == 0 and t <= n * dt:  # prune to s_t at t = 0, dt, ..., n dt (s_f)
            target = gmp_schedule(t, sparsity, 0.0, 0, n, dt)
            state["masks"] = global_magnitude_masks(model, target, state["masks"])

    train_steps(model, batches, recipe.steps, recipe, masks=lambda: state["masks"], before_step=before)
    return model


def lottery(model: nn.Module, sparsities: Sequence[float], batches: Iterator,
            recipe: SparseRecipe, progress: Callable[[float], None] | None = None) -> dict[float, nn.Module]:
    """IMP with rewinding; returns a trained ticket for every asked sparsity."""
    targets = sorted(check_sparsity_value(s) for s in sparsities)
    train_steps(model, batches, recipe.lottery_rewind_step, recipe)
    rewind = copy.deepcopy(model.state_dict())
    train_steps(model, batches, recipe.lottery_round_steps, recipe)  # round 0: dense
    masks, current, tickets = None, 0.0, {}
    while targets:
        step = 1.0 - (1.0 - current) * (1.0 - recipe.lottery_rate)
        current = min(step, targets[0])
        masks = global_magnitude_masks(model, current, masks)
        rewind_to(model, rewind, masks)
        train_steps(model, batches, recipe.lottery_round_steps, recipe, masks=lambda: masks)
        if progress is not None:
            progress(current)
        if math.isclose(current, targets[0]):
            tickets[targets.pop(0)] = copy.deepcopy(model)
    return tickets


@torch.no_grad()
def rewind_to(model: nn.Module, state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> None:
    """Load the rewind weights into every tensor, then zero the pruned conv weights."""
    model.load_state_dict(state)
    apply_masks(model, masks)


def acdc(model: nn.Module, sparsity: float, batches: Iterator, recipe: SparseRecipe) -> nn.Module:
    """Alternate dense and sparse phases of ``acdc_phase_steps``; the last phase is sparse.

    The schedule is dense, sparse, dense, ... until the final sparse phase, which takes
    every remaining step (at least two phase lengths).
    """
    p = recipe.acdc_phase_steps
    n_alternating = max(0, (recipe.steps - 2 * p) // p)
    final_start = n_alternating * p
    state: dict[str, Masks | None] = {"masks": None}

    def before(t: int) -> None:
        if t == final_start:  # the final sparse phase: its mask stays fixed to the end
            state["masks"] = global_magnitude_masks(model, sparsity)
        elif t < final_start and t % p == 0:
            state["masks"] = global_magnitude_masks(model, sparsity) if (t // p) % 2 else None

    train_steps(model, batches, recipe.steps, recipe, masks=lambda: state["masks"], before_step=before)
    return model


def rigl_drop_grow(weight: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor,
                   fraction: float) -> torch.Tensor:
    """One RigL update of one layer: same number of active weights before and after."""
    active = int(mask.sum())
    k = int(fraction * active)
    if k == 0:
        return mask
    flat_mask = mask.flatten()
    drop_score = torch.where(flat_mask, weight.detach().abs().flatten(),
                             torch.full_like(flat_mask, float("inf"), dtype=weight.dtype))
    keep = flat_mask.clone()
    keep[torch.sort(drop_score, stable=True).indices[:k]] = False
    grow_score = torch.where(keep, torch.full_like(flat_mask, -1.0, dtype=grad.dtype),
                             grad.detach().abs().flatten())
    new = keep.clone()
    new[torch.sort(grow_score, descending=True, stable=True).indices[:k]] = True
    return new.view_as(mask)


def rigl(model: nn.Module, sparsity: float, batches: Iterator, recipe: SparseRecipe) -> nn.Module:
    """RigL from the pretrained dense model with a uniform per-layer magnitude start mask."""
    masks = layerwise_magnitude_masks(model, sparsity)
    t_end = int(recipe.rigl_end_fraction * recipe.steps)
    weights = conv_weights(model)

    def after_backward(t: int) -> None:
        if t == 0 or t % recipe.rigl_delta or t >= t_end:
            return
        fraction = recipe.rigl_alpha / 2 * (1 + math.cos(math.pi * t / t_end))
        with torch.no_grad():
            for name, w in weights.items():
                new = rigl_drop_grow(w, w.grad, masks[name], fraction)
                grown = new & ~masks[name]
                w[grown] = 0.0  # regrown weights start at zero
                masks[name] = new

    train_steps(model, batches, recipe.steps, recipe, masks=lambda: masks, after_backward=after_backward)
    return model


# ----------------------------------------------------------------------------- zoo of sparse models


def validate_families(families: Mapping[str, Sequence[float]]) -> None:
    """ConfigError (one line) for an unknown family or a sparsity outside [0, 1)."""
    for family, sparsities in families.items():
        if family not in FAMILIES:
            raise unknown_choice("sparse family", family, FAMILIES)
        if not isinstance(sparsities, (list, tuple)) or not sparsities:
            raise ConfigError(f"sparse family {family!r} needs a non-empty list of sparsities")
        for s in sparsities:
            check_sparsity_value(s)


def model_label(family: str, sparsity: float) -> str:
    return "dense" if family == "dense" else f"{family}-{sparsity:g}"


@dataclass(frozen=True)
class SparseSpec:
    """Everything that determines the sparse models of one family."""

    family: str
    sparsities: tuple[float, ...]
    upstream_key: str
    source_per_class: int
    seed: int
    recipe: SparseRecipe

    def key(self, sparsity: float) -> str:
        fields = asdict(self) | {"version": SPARSE_VERSION, "data": data.GENERATOR_VERSION}
        if self.family != "lottery":  # other families build each sparsity independently
            fields["sparsities"] = [sparsity]
        return config.digest(fields)

    def path(self, sparsity: float) -> Path:
        return paths.ARTIFACTS_DIR / "sparse" / f"{self.family}-{sparsity:g}-{self.key(sparsity)}.pt"


def _save(model: nn.Module, path: Path, extra: dict) -> None:
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), **extra}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load(dense: nn.Module, path: Path) -> tuple[nn.Module, dict]:
    payload = torch.load(path, map_location="cpu", weights_only=False)
    model = copy.deepcopy(dense)
    model.load_state_dict(payload.pop("state_dict"))  # strict: every key must match
    return model.eval(), payload


def build_family(dense: nn.Module, spec: SparseSpec, source_train: data.ImageSet,
                 arch: str = "resnet18") -> dict[float, tuple[nn.Module, dict]]:
    """The sparse models of ``spec`` (cached under ``artifacts/sparse``), each with its info.

    Info holds ``family``, ``sparsity`` (asked), ``conv_sparsity`` (measured), ``train_seconds``
    (the whole IMP trajectory for lottery tickets). Every model depends only on ``spec`` and
    its sparsity, not on which other models were cached.
    """
    import time

    def fresh_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed_everything(spec.seed)
        return _batches(source_train, spec.recipe.batch_size, spec.seed)

    def save(models: Mapping[float, nn.Module], seconds: float) -> None:
        for s, model in models.items():
            info = {"arch": arch, "family": spec.family, "sparsity": s,
                    "conv_sparsity": conv_sparsity(model), "train_seconds": seconds,
                    "spec": asdict(spec)}
            _save(model, spec.path(s), info)

    missing = [s for s in spec.sparsities if not spec.path(s).exists()]
    if missing and spec.family == "lottery":  # one IMP trajectory passes every sparsity
        start = time.perf_counter()
        built = lottery(copy.deepcopy(dense), spec.sparsities, fresh_batches(), spec.recipe)
        save(built, time.perf_counter() - start)
    elif missing:  # each sparsity from the same seed and batches, whatever else is cached
        builder = {"oneshot": oneshot, "gmp": gmp, "acdc": acdc, "rigl": rigl}[spec.family]
        for s in missing:
            start = time.perf_counter()
            model = builder(copy.deepcopy(dense), s, fresh_batches(), spec.recipe)
            save({s: model}, time.perf_counter() - start)
    out = {}
    for s in spec.sparsities:
        out[s] = _load(dense, spec.path(s))
    return out


def sparse_models(arch: str, profile: str, families: Mapping[str, Sequence[float]],
                  source_per_class: int, seed: int, recipe: Mapping | SparseRecipe,
                  progress: bool = False) -> tuple[nn.Module, dict[str, tuple[nn.Module, dict]]]:
    """The dense upstream ``arch`` of ``profile``'s zoo and its sparse versions, by label.

    Labels are ``"<family>-<sparsity>"`` (e.g. ``lottery-0.9``). Sparse models are trained on
    ``source_per_class`` images per class of the source train split (drawn with ``seed``) and
    cached under ``artifacts/sparse/`` keyed by the upstream checkpoint, data and recipe.
    """
    from . import zoo

    validate_families(families)
    recipe = recipe if isinstance(recipe, SparseRecipe) else SparseRecipe(**recipe)
    dense = zoo.upstream_model(arch, profile, progress=progress)
    upstream_key = zoo.specs_from_params(zoo.upstream_params(profile))[arch].key if zoo.is_local(arch) else arch
    source = zoo.upstream_params(profile)["source_dataset"]
    source_train = data.load_dataset(source, "train", source_per_class, seed)
    out = {}
    for family, sparsities in families.items():
        spec = SparseSpec(family, tuple(float(s) for s in sparsities), upstream_key,
                          source_per_class, seed, recipe)
        for s, (model, info) in build_family(dense, spec, source_train, arch).items():
            out[model_label(family, s)] = (model, info)
    return dense, out

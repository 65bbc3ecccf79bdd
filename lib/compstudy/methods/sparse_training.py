"""Sparse versions of a pretrained model, made by knowledge distillation on unlabeled proxy images.

Misra et al., "Uncovering the Hidden Cost of Model Compression" (2024, section 4, "Sparse
models"), transfer ImageNet ResNets made sparse by GMP, lottery tickets, AC/DC and RigL. Those
checkpoints come from ImageNet training, which this study cannot run, so every family here
starts from the pretrained dense model and trains on an unlabeled proxy set by knowledge
distillation (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015): the loss
is T^2 KL(softmax(z_dense / T) || softmax(z_sparse / T)) to the dense model's logits.

The families, with the step counts of :class:`KDRecipe`:

* ``oneshot``: global magnitude pruning at step 0, then distillation with the mask fixed.
* ``gmp``: gradual magnitude pruning (Zhu & Gupta, "To prune, or not to prune", 2017,
  section 3): sparsity s_t = s_f (1 - (1 - t / t_end)^3), pruned globally every
  ``gmp_prune_every`` steps up to ``gmp_end_step``, then fixed.
* ``imp``: iterative magnitude pruning with rewinding (Frankle & Carbin, "The Lottery Ticket
  Hypothesis", ICLR 2019, section 2; Frankle et al., "Linear Mode Connectivity and the Lottery
  Ticket Hypothesis", ICML 2020, for rewinding): each round prunes ``imp_rate`` of the surviving
  weights by the magnitude of the *trained* weights, resets the survivors to the pretrained
  weights and distils again. A round that would pass an asked sparsity prunes exactly to it,
  and the ticket at an asked sparsity trains the full ``steps``; one trajectory yields every
  ticket.
* ``acdc``: alternating compressed / decompressed training (Peste et al., "AC/DC", NeurIPS
  2021, section 3): phases of ``acdc_phase_steps``, sparse (top-k magnitude mask) then dense,
  ending with a sparse phase that takes the remaining steps (at least two phases).
* ``rigl``: Evci et al., "Rigging the Lottery", ICML 2020, section 3: every ``rigl_every``
  steps until ``rigl_end_step``, each layer drops the fraction alpha_t = alpha/2 (1 + cos(pi t /
  t_end)) of its active weights with the smallest magnitude and regrows as many inactive ones
  with the largest dense gradient, which start at zero. The start mask is the global magnitude
  mask (a non-uniform distribution, as RigL's ERK).

Masks come from :mod:`compstudy.methods.masks` (all conv weights, depthwise included; BatchNorm
and the classifier stay dense) and are ranked on the raw, unfolded weights. Pruned gradients
are zeroed before each step and masks are re-applied after it, so pruned weights stay exactly
zero. BatchNorm stays in eval mode during distillation: its ImageNet statistics must not be
overwritten by the statistics of small upscaled proxy images.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .. import train
from . import masks as M

FAMILIES = ("oneshot", "gmp", "imp", "acdc", "rigl")


@dataclass(frozen=True)
class KDRecipe:
    """Distillation steps and optimiser shared by every family (steps of ``batch_size`` images).

    Args:
        steps: distillation steps of one sparse model (IMP: of each ticket's final round).
        batch_size: proxy images per step.
        lr: peak Adam learning rate (cosine-annealed to 0 over each run); above about 1e-3 the
            pretrained EfficientNet is destroyed within a few steps.
        temperature: T of the softened logits.
        gmp_prune_every, gmp_end_step: GMP's pruning period and the step of the final sparsity.
        imp_rate, imp_round_steps: fraction of survivors pruned per IMP round and the steps of a
            round that does not end at an asked sparsity.
        acdc_phase_steps: length of each AC/DC phase before the final sparse one.
        rigl_every, rigl_alpha, rigl_end_step: RigL's update period, initial drop fraction and
            the step after which the topology is frozen.
    """

    steps: int = 30
    batch_size: int = 32
    lr: float = 3e-4
    temperature: float = 2.0
    gmp_prune_every: int = 4
    gmp_end_step: int = 20
    imp_rate: float = 0.2
    imp_round_steps: int = 6
    acdc_phase_steps: int = 5
    rigl_every: int = 5
    rigl_alpha: float = 0.3
    rigl_end_step: int = 22


# ----------------------------------------------------------------------------- pieces


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def gmp_schedule(step: int, final_sparsity: float, end_step: int, initial_sparsity: float = 0.0) -> float:
    """Zhu & Gupta's cubic sparsity target at ``step`` (from step 0; final from ``end_step``)."""
    progress = min(max(step / max(end_step, 1), 0.0), 1.0)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


def imp_rounds(sparsities: Sequence[float], rate: float) -> list[float]:
    """The sparsity after each IMP round, about ``rate`` of the survivors per round.

    Between two asked sparsities the rounds prune an equal fraction of the survivors, as
    close to ``rate`` as a whole number of rounds allows, so every asked sparsity is hit
    exactly and no round is a sliver.
    """
    rounds, current = [], 0.0
    for target in sorted({M.check_sparsity(s) for s in sparsities}):
        if target <= current:
            continue
        kept = (1.0 - target) / (1.0 - current)
        n = max(1, round(math.log(kept) / math.log(1.0 - rate)))
        rounds += [1.0 - (1.0 - current) * kept ** (k / n) for k in range(1, n)] + [target]
        current = target
    return rounds


def acdc_sparse_phase(step: int, steps: int, phase: int) -> bool:
    """Whether step ``step`` (0-based) of AC/DC is in a sparse phase: sparse, dense, sparse, ...
    phases of ``phase`` steps, then a final sparse phase of at least two phases' length."""
    final_start = max(0, (steps - 2 * phase) // phase) * phase
    return step >= final_start or (step // phase) % 2 == 0


def rigl_fraction(step: int, alpha: float, end_step: int) -> float:
    """RigL's cosine-decayed drop fraction alpha/2 (1 + cos(pi t / t_end))."""
    return alpha / 2 * (1 + math.cos(math.pi * step / end_step))


def rigl_drop_grow(weight: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor,
                   fraction: float) -> torch.Tensor:
    """One RigL update of one layer: same number of active weights before and after.

    Drops the ``int(fraction * active)`` active weights of smallest magnitude and regrows as
    many of the inactive ones (before the drop) with the largest |gradient|.
    """
    flat_mask = mask.flatten()
    active = int(flat_mask.sum())
    k = min(int(fraction * active), flat_mask.numel() - active)
    if k == 0:
        return mask
    drop_score = torch.where(flat_mask, weight.detach().abs().flatten(),
                             torch.full_like(flat_mask, float("inf"), dtype=weight.dtype))
    keep = flat_mask.clone()
    keep[torch.topk(drop_score, k, largest=False, sorted=False).indices] = False
    grow_score = torch.where(flat_mask, torch.full_like(flat_mask, -1.0, dtype=grad.dtype),
                             grad.detach().abs().flatten())
    keep[torch.topk(grow_score, k, sorted=False).indices] = True
    return keep.view_as(mask)


# ----------------------------------------------------------------------------- distillation


def kd_batches(images: torch.Tensor, teacher_logits: torch.Tensor, steps: int, batch_size: int,
               seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches of (images, teacher logits) in a seeded order, reshuffled per pass."""
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(images), generator=g)
                       for _ in range(-(-steps * batch_size // len(images)))])
    return [(images[idx], teacher_logits[idx])
            for idx in order[:steps * batch_size].split(batch_size)]


class MaskedTraining:
    """Hooks of :func:`compstudy.train.fit` that keep a model sparse and update its mask.

    ``update(step, model, masks)`` returns the masks for the next step (``None``: dense); it
    runs after every optimiser step (``step`` = steps done). ``regrow(step, model, masks)``
    may change the masks from the dense gradients before the step (RigL). Pruned weights get
    zero gradients and are re-zeroed after every step.
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor] | None,
                 update: Callable | None = None, regrow: Callable | None = None):
        self.model, self.masks, self.step = model, masks, 0
        self._update, self._regrow = update, regrow
        if masks is not None:
            M.apply_masks(model, masks)

    def after_backward(self) -> None:
        if self._regrow is not None and self.masks is not None:
            self.masks = self._regrow(self.step, self.model, self.masks)
        if self.masks is not None:
            M.zero_pruned_gradients(self.model, self.masks)

    def after_step(self) -> None:
        self.step += 1
        if self._update is not None:
            self.masks = self._update(self.step, self.model, self.masks)
        if self.masks is not None:
            M.apply_masks(self.model, self.masks)


def distill(student: nn.Module, batches: list, recipe: KDRecipe, hooks: MaskedTraining,
            progress: bool = False) -> None:
    """Distil ``student`` over ``batches`` with Adam (cosine schedule), BatchNorm in eval mode."""
    def loss(model: nn.Module, images: torch.Tensor, teacher: torch.Tensor):
        model.eval()  # fit() sets train mode; BatchNorm must keep its ImageNet statistics
        return kd_loss(model(images), teacher, recipe.temperature), None

    settings = train.FitSettings(epochs=1, lr=recipe.lr, optimizer="adam", weight_decay=0.0)
    train.fit(student, batches, settings, desc="distil", progress=progress, loss_fn=loss,
              after_backward=hooks.after_backward, after_step=hooks.after_step)
    student.eval()


# ----------------------------------------------------------------------------- families


def _fixed(model: nn.Module, masks) -> MaskedTraining:
    return MaskedTraining(model, masks)


def oneshot(model: nn.Module, sparsity: float, batches: list, recipe: KDRecipe) -> nn.Module:
    """Global magnitude pruning once, then distillation with the mask fixed."""
    distill(model, batches, recipe, _fixed(model, M.global_magnitude_masks(model, sparsity)))
    return model


def gmp(model: nn.Module, sparsity: float, batches: list, recipe: KDRecipe) -> nn.Module:
    """Gradual magnitude pruning on the cubic schedule, during distillation."""
    def update(step, net, masks):
        if step % recipe.gmp_prune_every == 0 and step <= recipe.gmp_end_step:
            return M.global_magnitude_masks(net, gmp_schedule(step, sparsity, recipe.gmp_end_step), masks)
        return masks

    distill(model, batches, recipe, MaskedTraining(model, None, update=update))
    return model


def acdc(model: nn.Module, sparsity: float, batches: list, recipe: KDRecipe) -> nn.Module:
    """Alternating sparse and dense phases; the mask of each sparse phase is the top-k
    magnitude mask at its start, and the final sparse phase keeps its mask to the end."""
    steps, phase = len(batches), recipe.acdc_phase_steps

    def mask_for(step, net, masks):
        if not acdc_sparse_phase(step, steps, phase):
            return None
        starts = step == 0 or not acdc_sparse_phase(step - 1, steps, phase)
        return M.global_magnitude_masks(net, sparsity) if starts else masks

    distill(model, batches, recipe, MaskedTraining(model, mask_for(0, model, None), update=mask_for))
    return model


def rigl(model: nn.Module, sparsity: float, batches: list, recipe: KDRecipe) -> nn.Module:
    """RigL from the global magnitude mask: drop by magnitude, regrow by gradient."""
    weights = M.conv_weights(model)

    def regrow(step, net, masks):
        if step == 0 or step % recipe.rigl_every or step >= recipe.rigl_end_step:
            return masks
        fraction = rigl_fraction(step, recipe.rigl_alpha, recipe.rigl_end_step)
        return {name: rigl_drop_grow(w, w.grad, masks[name], fraction) for name, w in weights.items()}

    distill(model, batches, recipe,
            MaskedTraining(model, M.global_magnitude_masks(model, sparsity), regrow=regrow))
    return model


def imp(model: nn.Module, sparsities: Sequence[float], batches_for: Callable[[int], list],
        recipe: KDRecipe) -> dict[float, nn.Module]:
    """IMP with rewinding to the pretrained weights; a trained ticket per asked sparsity.

    ``batches_for(steps)`` gives the batches of one round (each round replays the same seeded
    stream, as each retraining from the rewind point does).
    """
    asked = {M.check_sparsity(s) for s in sparsities}
    rewind = copy.deepcopy(model.state_dict())
    masks, tickets = None, {}
    for current in imp_rounds(sorted(asked), recipe.imp_rate):
        masks = M.global_magnitude_masks(model, current, masks)  # ranks the trained weights
        model.load_state_dict(rewind)
        final = any(math.isclose(current, s) for s in asked)
        distill(model, batches_for(recipe.steps if final else recipe.imp_round_steps), recipe,
                _fixed(model, masks))
        if final:
            tickets[min(asked, key=lambda s: abs(s - current))] = copy.deepcopy(model)
    return tickets


def make_sparse(family: str, dense: nn.Module, sparsities: Sequence[float], images: torch.Tensor,
                teacher_logits: torch.Tensor, recipe: KDRecipe, seed: int) -> dict[float, nn.Module]:
    """The sparse models of ``family`` at each sparsity, distilled from ``dense``.

    ``images`` are proxy images already at the student's input side (floats in [0, 1]) and
    ``teacher_logits`` the dense model's logits on them. Every model of a family replays the
    same seeded batches, so a model does not depend on which of its siblings were asked for
    (IMP's tickets share one trajectory by design).
    """
    if family not in FAMILIES:
        from ..errors import unknown_choice

        raise unknown_choice("sparse family", family, FAMILIES)

    def batches_for(steps: int) -> list:
        return kd_batches(images, teacher_logits, steps, recipe.batch_size, seed)

    if family == "imp":
        return imp(copy.deepcopy(dense), sparsities, batches_for, recipe)
    builder = {"oneshot": oneshot, "gmp": gmp, "acdc": acdc, "rigl": rigl}[family]
    return {float(s): builder(copy.deepcopy(dense), M.check_sparsity(s), batches_for(recipe.steps), recipe)
            for s in sparsities}

"""Quality, calibration, size, cost and speed measurements shared by every notebook.

Calibration follows Guo et al. 2017, "On Calibration of Modern Neural Networks" (top-label
ECE with equal-width confidence bins). Cost is counted with torch-pruning's op counter so
numbers are comparable with the structured-pruning literature that uses it; its conventions
are spelled out in :func:`count_macs`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Hashable, Iterator, Mapping

import numpy as np
import pandas as pd
import torch
import torch_pruning as tp
from timm.layers import Attention as _TimmAttention
from timm.layers import LayerNorm as _TimmLayerNorm
from torch import nn
from torch.utils import benchmark
from torch_pruning.utils import op_counter as _tp_op_counter
from tqdm import tqdm

from compstudy import claims

# ----------------------------------------------------------------------------- quality


def accuracy(logits_or_preds: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy as a fraction in [0, 1]; accepts N×K scores (logits or probs) or N preds."""
    preds = logits_or_preds.argmax(dim=1) if logits_or_preds.ndim == 2 else logits_or_preds
    if preds.ndim != 1 or preds.shape != labels.shape or labels.numel() == 0:
        raise ValueError(
            f"accuracy needs N×K scores or N predictions matching N labels, got "
            f"{tuple(logits_or_preds.shape)} and {tuple(labels.shape)}"
        )
    return (preds.cpu() == labels.cpu()).double().mean().item()


def _check_probs(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate an N×K probability matrix and N labels; return them as float64 / int64 on CPU.

    Rejecting values outside [0, 1] or rows that do not sum to 1 catches callers who pass
    logits: the original study code computed "ECE" on logits, which is meaningless.
    """
    probs = probs.detach().cpu().double()
    labels = labels.detach().cpu().long()
    if probs.ndim != 2 or labels.ndim != 1 or probs.shape[0] != labels.shape[0] or not len(labels):
        raise ValueError(
            f"need N×K probabilities and N labels, got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    if not torch.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError("probabilities must lie in [0, 1]; did you pass logits? apply softmax first")
    if not torch.allclose(probs.sum(dim=1), torch.ones(len(probs), dtype=probs.dtype), atol=1e-3):
        raise ValueError("probability rows must sum to 1; did you pass logits? apply softmax first")
    if labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must lie in [0, {probs.shape[1]})")
    return probs, labels


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> pd.DataFrame:
    """Per-bin count, accuracy and mean confidence of the top-label prediction.

    Confidence is the max probability; bins are equal-width on [0, 1] and half-open
    (lo, hi], the first one also taking confidence 0 (Guo et al. 2017). Empty bins keep
    count 0 and NaN accuracy/confidence so a reliability diagram shows every bin.
    Columns: bin_lower, bin_upper, count, accuracy, confidence.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    probs, labels = _check_probs(probs, labels)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    # bucketize(right=False) gives i with edges[i] < conf <= edges[i+1] over the inner edges.
    idx = torch.bucketize(conf, edges[1:-1])
    count = torch.bincount(idx, minlength=n_bins).double()
    acc = torch.bincount(idx, weights=correct, minlength=n_bins) / count
    mean_conf = torch.bincount(idx, weights=conf, minlength=n_bins) / count
    return pd.DataFrame({
        "bin_lower": edges[:-1].numpy(),
        "bin_upper": edges[1:].numpy(),
        "count": count.long().numpy(),
        "accuracy": acc.numpy(),  # 0/0 -> NaN for empty bins
        "confidence": mean_conf.numpy(),
    })


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Top-label ECE (Guo et al. 2017): sum_m |B_m|/n * |acc(B_m) - conf(B_m)|.

    Equal-width bins on confidence = max probability, (lo, hi] with the first bin including
    0; see :func:`reliability_bins`. Raises ValueError when ``probs`` are not probabilities.
    """
    bins = reliability_bins(probs, labels, n_bins).query("count > 0")
    weights = bins["count"] / bins["count"].sum()
    return float((weights * (bins["accuracy"] - bins["confidence"]).abs()).sum())


def true_class_confidence(probs: torch.Tensor, labels: torch.Tensor) -> pd.DataFrame:
    """Probability given to the true class per sample, and whether the top-1 prediction is right.

    Columns: confidence_true, correct (bool). Used for confidence histograms split by
    correctness, which show over-confidence beyond what the scalar ECE captures.
    """
    probs, labels = _check_probs(probs, labels)
    return pd.DataFrame({
        "confidence_true": probs[torch.arange(len(labels)), labels].numpy(),
        "correct": (probs.argmax(dim=1) == labels).numpy(),
    })


# ----------------------------------------------------------------------------- size


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared tensors counted once, as ``model.parameters()`` does)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_nonzero_parameters(model: nn.Module) -> int:
    """Number of non-zero parameter elements, the size measure of mask (unstructured) pruning.

    Works for weights zeroed in place and for ``torch.nn.utils.prune`` re-parametrisation,
    where the dense ``<name>_orig`` parameter is replaced by the masked ``<name>`` tensor.
    Masked models keep dense shapes, so they are never counted or timed as cheaper elsewhere.
    """
    total = 0
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            effective = getattr(module, name[: -len("_orig")], None) if name.endswith("_orig") else None
            total += int(torch.count_nonzero(effective if isinstance(effective, torch.Tensor) else p))
    return total


# ----------------------------------------------------------------------------- cost


@contextlib.contextmanager
def _eval_mode(*models: nn.Module) -> Iterator[None]:
    """Every module of ``models`` in eval mode inside the block, each training flag restored
    afterwards (counting and timing must not change how a caller's model trains)."""
    modes = {m: m.training for model in models for m in model.modules()}
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _timm_attention_ops(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """Op-counter hook for timm's ``Attention`` that stays right after structured pruning.

    torch-pruning 1.6.1 already hooks this class and counts q@k^T and attn@v, but it takes
    the output projection as attn_dim x attn_dim, wrong once pruning makes the attention
    width differ from the embedding width. Same conventions as tp otherwise: MACs of qkv,
    the two attention matmuls (2·T²·attn_dim), proj (and the optional gate), plus one op per
    q-scaling element, per softmax entry and per bias element.
    """
    b, t, dim = inputs[0].shape
    qkv, proj, gate = module.qkv, module.proj, getattr(module, "gate", None)
    a = qkv.out_features // 3
    ops = t * dim * 3 * a + 2 * t * t * a + t * a * proj.out_features  # qkv, q@k^T + attn@v, proj
    ops += module.num_heads * t * t + t * a  # softmax, q scaling
    if gate is not None:
        ops += t * gate.in_features * gate.out_features
    ops += t * sum(lin.out_features for lin in (qkv, proj, gate) if lin is not None and lin.bias is not None)
    module.__flops__ += int(b * ops)


_SCALARS = (bool, int, float, str, type(None))
_MACS_BY_ARCHITECTURE: dict[tuple, int] = {}


def _setting(value) -> bool:
    return isinstance(value, _SCALARS) or (isinstance(value, tuple) and all(isinstance(v, _SCALARS) for v in value))


def architecture(model: nn.Module) -> tuple:
    """What an op count depends on, and not the weights: every module's name, class, scalar
    settings (stride, padding, groups, heads, ...) and parameter and buffer shapes."""
    return tuple(
        (name, type(m).__module__, type(m).__qualname__,
         tuple(sorted((k, v) for k, v in vars(m).items()
                      if not k.startswith("_") and k != "training" and _setting(v))),
         tuple((n, tuple(t.shape)) for n, t in (*m.named_parameters(recurse=False),
                                                  *m.named_buffers(recurse=False))))
        for name, m in model.named_modules())


def count_macs(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Per-image multiply-accumulates, counted by ``torch_pruning.utils.count_ops_and_params``.

    tp (1.6.1) conventions, kept so figures match the literature built on it: conv and
    linear layers count their MACs (Linear(10, 5) = 50, Conv2d = Cout·Cin/g·k·k·Hout·Wout)
    plus bias adds (conv: one per output element; linear: one per output feature, not per
    row or token, a tp quirk); BatchNorm/LayerNorm add 2 ops per element, ReLU/GELU and
    pooling 1 per element; timm ``Attention`` is counted whole, including the q@k^T and
    attn@v matmuls that run inside ``F.scaled_dot_product_attention`` (tp hooks it; we swap
    in :func:`_timm_attention_ops`, correct for pruned widths). tp matches exact module
    types and so would skip timm's ``LayerNorm`` subclass; we count it like nn.LayerNorm.
    The non-MAC extras are under 1 % of resnet18/ViT totals at 32×32. tp divides
    by the batch size, so the result is per image. Mask-pruned weights still count (dense).
    The model is put in eval mode for the count and every module's mode is restored after.
    tp deep-copies the model at every count (a third of a second for DeiT-Tiny), so counts
    are remembered per :func:`architecture` and input size.
    """
    key = (tuple(input_size), architecture(model))
    if key not in _MACS_BY_ARCHITECTURE:
        _MACS_BY_ARCHITECTURE[key] = _count_macs(model, input_size)
    return _MACS_BY_ARCHITECTURE[key]


def _count_macs(model: nn.Module, input_size: tuple[int, ...]) -> int:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    with _eval_mode(model):
        try:
            _tp_op_counter.CUSTOM_MODULES_MAPPING = {  # tp matches exact types, so add timm's own
                _TimmAttention: _timm_attention_ops,
                _TimmLayerNorm: _tp_op_counter.ln_flops_counter_hook,  # nn.LayerNorm subclass
            }
            macs, _ = tp.utils.count_ops_and_params(model, torch.randn(*input_size, device=device, dtype=dtype))
        finally:
            _tp_op_counter.CUSTOM_MODULES_MAPPING = {}
    return int(round(macs))


# ----------------------------------------------------------------------------- speed


def measure_latency(
    model: nn.Module,
    batch_size: int,
    input_size: tuple[int, ...] = (3, 32, 32),
    num_threads: int = 2,
    min_run_time: float = 1.0,
) -> dict:
    """Forward-pass latency of one batch, in eval mode under ``torch.inference_mode``.

    ``torch.utils.benchmark.Timer`` pins the intra-op thread count (and restores it) and
    ``blocked_autorange`` warms up, then times blocks of runs for at least ``min_run_time``
    seconds; we report the median and inter-quartile range over blocks. Returns
    ``{"batch_size", "num_threads", "median_ms", "iqr_ms", "images_per_s"}``.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.randn(batch_size, *input_size, device=device)

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    with _eval_mode(model):
        timer = benchmark.Timer(stmt="forward()", globals={"forward": forward}, num_threads=num_threads)
        m = timer.blocked_autorange(min_run_time=min_run_time)
    return {
        "batch_size": batch_size,
        "num_threads": num_threads,
        "median_ms": m.median * 1e3,
        "iqr_ms": m.iqr * 1e3,
        "images_per_s": batch_size / m.median,
    }


def measure_latencies(
    models: Mapping[Hashable, nn.Module],
    batch_size: int,
    input_size: tuple[int, ...],
    forwards: int,
    progress: bool = False,
    reference: Hashable | None = None,
) -> dict[Hashable, dict]:
    """Forward-pass latency of one batch for several models timed in turn, in eval mode under
    ``torch.inference_mode`` with the process's intra-op threads; per model the keys of
    :func:`measure_latency`, the median and inter-quartile range taken over its forwards.

    After one warm-up forward each, the models run one forward at a time, round after round
    (1, 2, 3, 1, 2, 3, ...), and each gets the median of its ``forwards`` times. A slow spell of
    a busy machine then slows every model alike, so the ratios between models, which the
    claims compare, stay fair. On the 2-core machine, a truncated ViT timed this way at batch 1
    was 1.07-1.12 times as fast as the full one in three repeats (ideal 1.09); timed one after
    another by :func:`measure_latency`, 0.98-1.18. ``torch.utils.benchmark`` has no such turn
    order, and its ``Timer.timeit`` warms up twice before every timed call, which would triple
    the forwards; hence ``time.perf_counter``. ``progress`` shows a bar over the rounds.

    With a ``reference`` model, each model also gets ``ratio``: the mean over rounds of its
    time divided by the reference's time in the same round, with ``ratio_low`` and
    ``ratio_high``, its 95 % t-interval over the rounds, and ``speedup`` = 1 / ``ratio`` with
    ``speedup_low`` and ``speedup_high``, the same interval inverted. Pairing by round removes
    what a round's machine state does to both, so a ratio near 1 is resolved far more finely
    than by dividing two medians, each of which carries its own noise.
    """
    if forwards < 1:
        raise ValueError(f"forwards must be >= 1, got {forwards}")
    if reference is not None and reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models timed")
    if reference is not None and forwards < 2:
        raise ValueError(f"ratios to a reference need an interval over rounds: forwards must be >= 2, got {forwards}")
    x = torch.randn(batch_size, *input_size)
    times: dict[Hashable, list[float]] = {key: [] for key in models}
    with _eval_mode(*models.values()), torch.inference_mode():
        for model in models.values():
            model(x)
        rounds = tqdm(range(forwards), desc=f"timing {len(models)} models in turn", leave=False,
                      **({} if progress else {"disable": True}))
        for _ in rounds:
            for key, model in models.items():
                start = time.perf_counter()
                model(x)
                times[key].append(time.perf_counter() - start)
    threads = torch.get_num_threads()
    out = {}
    for key, seconds in times.items():
        q1, median, q3 = np.percentile(seconds, [25, 50, 75])
        out[key] = {"batch_size": batch_size, "num_threads": threads, "median_ms": median * 1e3,
                    "iqr_ms": (q3 - q1) * 1e3, "images_per_s": batch_size / median}
        if reference is not None:
            ratio = claims.t_interval(np.divide(seconds, times[reference]))
            out[key] |= {"ratio": ratio.effect, "ratio_low": ratio.ci_low, "ratio_high": ratio.ci_high,
                         "speedup": 1 / ratio.effect, "speedup_low": 1 / ratio.ci_high,
                         "speedup_high": 1 / ratio.ci_low}
    return out

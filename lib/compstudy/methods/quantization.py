"""Batch-norm folding and post-training int8 fake quantization of a frozen CNN.

Misra et al., "Uncovering the Hidden Cost of Model Compression" (2024, v3, section 5,
"Quantized models"), transfer low-bit quantized sources by visual prompting and find no
calibration penalty. Prompting needs gradients *through* the source, so the quantized model is
simulated in float ("fake quantization", Jacob et al., "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, section 2) with the
``torch.ao.quantization.FakeQuantize`` modules, whose straight-through estimator passes the
gradient wherever a value lies inside the quantization range:

* **Fold** every BatchNorm into the convolution before it (:func:`fold_batchnorm`): the
  eval-mode function is unchanged (up to float rounding), and the quantized weights are then
  the weights that an integer kernel would use.
* **Weights**: per-output-channel symmetric ``bits``-bit grids (``PerChannelMinMaxObserver``),
  at most 2^bits values per channel. The source is frozen, so the fake-quantized values are
  written into the weights once.
* **Activations**: a per-tensor affine ``bits``-bit ``FakeQuantize`` on the input of every
  convolution and of the classifier, its range calibrated (``MinMaxObserver``) on unlabeled
  proxy images, then frozen.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MinMaxObserver, PerChannelMinMaxObserver

QUANTIZED = (nn.Conv2d, nn.Linear)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every BatchNorm folded into the conv before it.

    A ``BatchNorm2d`` counts as following a conv when it is the next registered sibling of an
    ``nn.Conv2d`` in the same parent, as in timm's EfficientNet and ResNet blocks (``conv_pw,
    bn1, conv_dw, bn2, ...``). The conv gets the scale ``gamma / sqrt(var + eps)`` in its
    weights and the shift as its bias; the BatchNorm is replaced by its activation (timm's
    ``BatchNormAct2d``) or by an identity. Zero weights stay zero, so sparsity is unchanged.
    """
    folded = copy.deepcopy(model).eval()
    for parent in list(folded.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = bn.bias - bn.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bias.clone())
            setattr(parent, bn_name, getattr(bn, "act", None) or nn.Identity())
    return folded


def _quantize_input(module: nn.Module, args: tuple) -> tuple:
    return (module.input_quant(args[0]),) + tuple(args[1:])


def _weight_quantizer(bits: int) -> FakeQuantize:
    return FakeQuantize(observer=PerChannelMinMaxObserver, quant_min=-(2 ** (bits - 1)),
                        quant_max=2 ** (bits - 1) - 1, dtype=torch.qint8,
                        qscheme=torch.per_channel_symmetric, ch_axis=0)


def _activation_quantizer(bits: int) -> FakeQuantize:
    return FakeQuantize(observer=MinMaxObserver, quant_min=0, quant_max=2 ** bits - 1,
                        dtype=torch.quint8, qscheme=torch.per_tensor_affine)


def fake_quantize(model: nn.Module, bits: int = 8) -> nn.Module:
    """A fake-quantized copy of a (BN-folded) ``model``, not yet calibrated.

    Weights of every conv and linear layer are replaced by their per-channel ``bits``-bit
    values; each such layer gets an ``input_quant`` FakeQuantize on its input (a forward
    pre-hook), observing and not yet quantizing: run :func:`calibrate` next. Parameters are
    frozen (``requires_grad`` False); gradients still flow to the input.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"fake quantization supports 2 to 8 bits, got {bits}")
    quantized = copy.deepcopy(model).eval()
    for module in quantized.modules():
        if isinstance(module, QUANTIZED):
            quantizer = _weight_quantizer(bits)
            with torch.no_grad():
                quantizer(module.weight)  # observe the ranges ...
                module.weight.copy_(quantizer(module.weight))  # ... then write the grid values
            act = _activation_quantizer(bits)
            act.disable_fake_quant()
            act.enable_observer()
            module.add_module("input_quant", act)
            module.register_forward_pre_hook(_quantize_input)
    for p in quantized.parameters():
        p.requires_grad_(False)
    return quantized


def activation_quantizers(model: nn.Module) -> list[FakeQuantize]:
    return [m.input_quant for m in model.modules() if isinstance(m, QUANTIZED) and hasattr(m, "input_quant")]


@torch.no_grad()
def calibrate(model: nn.Module, inputs: torch.Tensor, batch_size: int = 128) -> nn.Module:
    """Set the activation ranges from ``inputs`` (normalised model inputs), then freeze them:
    observers off, fake quantization on. Returns ``model``."""
    model.eval()
    for q in activation_quantizers(model):
        q.enable_observer()
        q.disable_fake_quant()
    for i in range(0, len(inputs), batch_size):
        model(inputs[i:i + batch_size].contiguous(memory_format=torch.channels_last))
    freeze(model)
    return model


def freeze(model: nn.Module) -> nn.Module:
    """Activation quantizers with their current ranges: observers off, fake quantization on."""
    for q in activation_quantizers(model):
        q.disable_observer()
        q.enable_fake_quant()
    return model


def distinct_values_per_channel(model: nn.Module) -> dict[str, int]:
    """For each conv / linear weight, the largest number of distinct values in one output channel."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, QUANTIZED):
            w = module.weight.detach().flatten(1)
            out[name] = max(int(torch.unique(row).numel()) for row in w)
    return out

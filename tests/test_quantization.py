"""BatchNorm folding and int8 fake quantization of the real EfficientNet-Lite0
(compstudy.methods.quantization): small, checked output error; at most 2^bits weight values per
channel; gradients reach a visual prompt through the quantized model."""

import copy

import pytest
import torch
from torch import nn

from compstudy import data, models
from compstudy.methods import masks, prompting, quantization


@pytest.fixture(scope="module")
def lite0():
    return models.upstream_model("efficientnet_lite0", 32)


@pytest.fixture(scope="module")
def images():
    digits = data.load_dataset("digits", "test")
    return prompting.resize(digits.images[:96], 32) * 2 - 1  # normalised (mean = std = 0.5)


def test_folding_batchnorm_keeps_the_function_and_the_zeros(lite0, images):
    folded = quantization.fold_batchnorm(lite0)
    with torch.no_grad():
        assert torch.allclose(lite0(images), folded(images), atol=2e-4, rtol=1e-4)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in folded.modules())
    assert any(isinstance(mod, nn.BatchNorm2d) for mod in lite0.modules())  # the original is untouched
    sparse = copy.deepcopy(lite0)
    masks.apply_masks(sparse, masks.global_magnitude_masks(sparse, 0.5))
    # zeros survive folding: a folded sparse model keeps the sparsity it was given
    assert masks.conv_sparsity(quantization.fold_batchnorm(sparse)) == pytest.approx(masks.conv_sparsity(sparse))


@pytest.fixture(scope="module")
def quantized(lite0, images):
    folded = quantization.fold_batchnorm(lite0)
    return folded, quantization.calibrate(quantization.fake_quantize(folded, 8), images[:64])


def test_fake_quantized_outputs_differ_from_float_by_a_small_checked_amount(quantized, images):
    folded, q = quantized
    held_out = images[64:]
    with torch.no_grad():
        reference, out = folded(held_out), q(held_out)
    error = (out - reference).abs().mean()
    assert 0 < error < 0.15 * reference.std()  # not the float model, but close to it
    assert (out.argmax(1) == reference.argmax(1)).float().mean() >= 0.7


@pytest.mark.parametrize("bits", [8, 4])
def test_weights_take_at_most_two_to_the_bits_values_per_channel(lite0, images, bits):
    q = quantization.fake_quantize(quantization.fold_batchnorm(lite0), bits)
    counts = quantization.distinct_values_per_channel(q)
    assert len(counts) == sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in lite0.modules())
    assert max(counts.values()) <= 2 ** bits
    assert max(counts.values()) > 2 ** (bits - 2)  # the grid is used, not collapsed


def test_gradients_reach_the_prompt_through_the_quantized_model(quantized):
    _, q = quantized
    prompt = prompting.PadPrompt(24, 32)
    x = torch.rand(4, 3, 24, 24)
    loss = nn.functional.cross_entropy(q(prompt(x))[:, :10], torch.arange(4))
    loss.backward()
    grad = prompt.theta.grad
    rows, cols = prompt.window
    border = torch.ones(32, 32, dtype=torch.bool)
    border[rows, cols] = False
    assert (grad[:, ~border] == 0).all()
    assert (grad[:, border] != 0).float().mean() > 0.9
    assert all(not p.requires_grad for p in q.parameters())


def test_calibration_freezes_the_ranges(quantized, images):
    _, q = quantized
    quantizers = quantization.activation_quantizers(q)
    assert quantizers and all(bool(f.fake_quant_enabled) and not bool(f.observer_enabled) for f in quantizers)
    scales = [f.scale.clone() for f in quantizers]
    with torch.no_grad():
        q(images[:8] * 3)  # inputs outside the calibrated range do not move it
    assert all(torch.equal(a, f.scale) for a, f in zip(scales, quantizers))

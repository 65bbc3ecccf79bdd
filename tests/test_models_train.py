"""The input adapter and the one training loop (seeded, hooks, early stopping, schedule)."""

import pytest
import timm
import torch
from torch import nn

from compstudy import models, train
from compstudy.errors import ConfigError
from compstudy.seeding import seed_everything


def _small_vit(side: int = 32) -> nn.Module:
    """A tiny timm ViT with a timm pretrained_cfg, as the upstream models have."""
    model = timm.create_model("vit_tiny_patch16_224", img_size=side, patch_size=8, embed_dim=32,
                              depth=2, num_heads=2, num_classes=2)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, side, side)}
    return model


def _toy_loader(seed=0, n=64):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 32, 32, generator=generator)
    labels = (images[:, 0].mean((1, 2)) > 0.5).long()  # learnable from the red channel
    dataset = torch.utils.data.TensorDataset(images, labels)
    return torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, generator=generator)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'; valid choices: efficientnet_lite0"):
        models.check_model_name("resnet9000")
    assert models.check_model_name("deit_tiny") == "deit_tiny"
    assert models.check_model_name("resnet50.tv2_in1k") == "resnet50.tv2_in1k"  # any timm name (paper)


def test_adapt_input_resizes_and_normalises_with_the_models_statistics():
    model = _small_vit()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 64, 64), "interpolation": "bilinear",
                            "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    grey = torch.full((1, 3, 32, 32), 0.5)
    adapted = models.adapt_input(model, grey)
    assert adapted.shape == (1, 3, 64, 64)
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(adapted[0, :, 10, 10], expected, atol=1e-5)
    plain = nn.Linear(3, 3)  # no pretrained_cfg: the batch passes unchanged
    assert models.adapt_input(plain, grey) is grey


def test_fit_is_seeded_learns_and_returns_a_tidy_history():
    settings = train.FitSettings(epochs=4, lr=0.05, optimizer="sgd")
    results = []
    for _ in range(2):
        seed_everything(0)
        model = _small_vit()
        history = train.fit(model, _toy_loader(), settings, val_loader=_toy_loader(1), progress=False)
        results.append((history, [p.detach().clone() for p in model.parameters()]))
    (first, weights_a), (second, weights_b) = results
    assert first.equals(second), "same seed must give the same history"
    assert all(torch.equal(a, b) for a, b in zip(weights_a, weights_b))
    assert set(first.columns) == {"epoch", "split", "metric", "value"}
    train_loss = first.query("split == 'train' and metric == 'loss'").value.tolist()
    assert train_loss[-1] < train_loss[0]


def test_fit_hooks_run_in_order_and_a_custom_loss_replaces_cross_entropy():
    seed_everything(0)
    model = _small_vit()
    events = []
    weight = model.head.weight

    def after_backward():
        events.append(("backward", weight.grad is not None))
        weight.grad.zero_()  # a frozen-by-hook parameter: the step must not move it

    def loss_fn(m, images, targets):
        events.append(("loss", images.shape[-1]))
        return m(images).pow(2).mean(), None  # no logits: no train accuracy row

    before = weight.detach().clone()
    history = train.fit(model, _toy_loader(n=32), train.FitSettings(epochs=1, lr=0.1, optimizer="sgd",
                                                                    weight_decay=0.0),
                        loss_fn=loss_fn, after_backward=after_backward,
                        after_step=lambda: events.append(("step", None)), progress=False)
    assert events == [("loss", 32), ("backward", True), ("step", None)] * 2
    assert torch.equal(weight, before)
    assert set(history.metric) == {"loss"}


def test_early_stopping_halts_and_restores_best_weights():
    seed_everything(0)
    model = _small_vit()
    settings = train.FitSettings(epochs=30, lr=1e-6, optimizer="sgd", patience=2)
    history = train.fit(model, _toy_loader(), settings, val_loader=_toy_loader(1), progress=False)
    assert history.epoch.max() < 30


def test_warmup_rises_linearly_to_the_peak_then_cosine_anneals_to_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    scheduler = train.warmup_cosine(optimizer, total_steps=10, warmup_steps=4)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert lrs[4] == pytest.approx(0.4) and lrs[4:] == sorted(lrs[4:], reverse=True)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_fit_feeds_each_model_the_input_side_it_declares():
    seed_everything(0)
    model = _small_vit(side=48)
    sides = []
    model.register_forward_pre_hook(lambda module, args: sides.append(args[0].shape[-1]))
    train.fit(model, _toy_loader(n=16), train.FitSettings(epochs=1, lr=1e-3, optimizer="adamw"),
              progress=False)
    train.predict(model, _toy_loader(n=16))
    assert sides and set(sides) == {48}


def test_fit_settings_reject_bad_values():
    with pytest.raises(ConfigError, match="unknown optimizer 'rmsprop'"):
        train.FitSettings(epochs=1, lr=0.1, optimizer="rmsprop")
    with pytest.raises(ConfigError):
        train.FitSettings(epochs=0, lr=0.1)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        train.FitSettings(epochs=2, lr=0.1, warmup_epochs=3)


def test_seed_everything_fixes_torch_threads_and_gives_blas_one_thread():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    try:
        seed_everything(0, threads=2)
        blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert torch.get_num_threads() == 2 and blas and all(lib["num_threads"] == 1 for lib in blas)
        first = torch.rand(3)
        seed_everything(0, threads=2)
        assert torch.equal(torch.rand(3), first)
    finally:
        torch.set_num_threads(before)

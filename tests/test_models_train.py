"""Models, the training loop and the upstream zoo cache."""

import pytest
import torch

from compstudy import config, data, models, train, zoo
from compstudy.errors import ConfigError
from compstudy.seeding import seed_everything


@pytest.mark.parametrize("name, width", [("resnet18", 512), ("resnet34", 512), ("vit", 64), ("vit_mini", 64)])
def test_local_models_take_32px_images(name, width):
    model = models.build_model(name, num_classes=7).eval()
    images = torch.randn(3, 3, 32, 32)
    assert model(images).shape == (3, 7)
    assert models.pooled_features(model, images).shape == (3, width)


def test_vit_has_twelve_blocks_of_width_64_and_patch_4():
    vit = models.build_model("vit", num_classes=10)
    assert len(vit.blocks) == 12 and vit.embed_dim == 64
    assert vit.patch_embed.patch_size == (4, 4) and vit.patch_embed.num_patches == 64


def test_unknown_model_and_offline_weights_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'; valid choices: resnet18"):
        models.build_model("resnet9000", 10)
    with pytest.raises(ConfigError, match="trained by notebook 00"):
        models.build_model("resnet18", 10, pretrained=True)


def _toy_loader(seed=0, n=64):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=generator)
    labels = (images[:, 0].mean((1, 2)) > 0).long()  # learnable from the red channel
    dataset = torch.utils.data.TensorDataset(images, labels)
    return torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=True, generator=generator)


def test_fit_is_seeded_learns_and_returns_a_tidy_history():
    settings = train.FitSettings(epochs=4, lr=0.05, optimizer="sgd")
    results = []
    for _ in range(2):
        seed_everything(0)
        model = models.build_model("vit_mini", num_classes=2)
        history = train.fit(model, _toy_loader(), settings, val_loader=_toy_loader(1), progress=False)
        results.append((history, [p.detach().clone() for p in model.parameters()]))
    (first, weights_a), (second, weights_b) = results
    assert first.equals(second), "same seed must give the same history"
    assert all(torch.equal(a, b) for a, b in zip(weights_a, weights_b))
    assert set(first.columns) == {"epoch", "split", "metric", "value"}
    train_loss = first.query("split == 'train' and metric == 'loss'").value.tolist()
    assert train_loss[-1] < train_loss[0]


def test_early_stopping_halts_and_restores_best_weights():
    seed_everything(0)
    model = models.build_model("vit_mini", num_classes=2)
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
    model = models.build_model("resnet18", num_classes=2)
    sides = []
    model.register_forward_pre_hook(lambda module, args: sides.append(args[0].shape[-1]))
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 48, 48)}  # as a 48-px timm model
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


def test_zoo_trains_once_then_hits_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo.paths, "ARTIFACTS_DIR", tmp_path)
    monkeypatch.setattr(data, "ARTIFACTS_DIR", tmp_path, raising=False)
    params = config.validate("00_upstream", {
        "profile": "smoke", "source_train_per_class": 4, "source_val_per_class": 1,
        "source_test_per_class": 2, "zoo_models": ["resnet18", "vit_mini"],
        "epochs": {"resnet18": 1, "vit_mini": 1}, "teachers": {"vit_mini": "resnet18"}})
    spec = zoo.specs_from_params(params)["vit_mini"]
    assert spec.teacher == zoo.specs_from_params(params)["resnet18"]
    assert not spec.path.exists() and not spec.teacher.path.exists()
    model, payload = zoo.pretrain(spec, progress=False)
    assert spec.teacher.path.exists(), "the distillation teacher is trained (and cached) first"
    assert spec.path.exists() and 0.0 <= payload["source_test_accuracy"] <= 1.0
    mtime = spec.path.stat().st_mtime_ns

    calls = []
    monkeypatch.setattr(train, "fit", lambda *a, **k: calls.append(1))
    again, payload_again = zoo.pretrain(spec, progress=False)
    assert calls == [] and spec.path.stat().st_mtime_ns == mtime  # cache hit: no training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert payload_again["source_test_accuracy"] == payload["source_test_accuracy"]

    other = zoo.specs_from_params({**params, "seed": 1})["vit_mini"]
    assert other.key != spec.key  # any change of recipe is a different checkpoint
    longer_teacher = zoo.specs_from_params({**params, "epochs": {"resnet18": 2, "vit_mini": 1}})
    assert longer_teacher["vit_mini"].key != spec.key  # ... the teacher's recipe included


def test_zoo_config_errors():
    params = config.validate("00_upstream", {"zoo_models": ["resnet18"], "epochs": {}})
    with pytest.raises(ConfigError, match="has no entry in epochs"):
        zoo.specs_from_params(params)
    pair = {"zoo_models": ["resnet18", "vit_mini"], "epochs": {"resnet18": 1, "vit_mini": 1}}
    with pytest.raises(ConfigError, match="teacher 'resnet34' of 'vit_mini' must be a zoo model"):
        zoo.specs_from_params(config.validate("00_upstream", {**pair, "teachers": {"vit_mini": "resnet34"}}))
    with pytest.raises(ConfigError, match="give a teacher exactly when its recipe has distillation"):
        zoo.specs_from_params(config.validate("00_upstream", {**pair, "teachers": {}}))
    with pytest.raises(ConfigError, match="distillation > 0 needs a teacher"):
        train.fit(models.build_model("vit_mini", 2), _toy_loader(n=16),
                  train.FitSettings(epochs=1, lr=1e-3, distillation=0.5), progress=False)
    with pytest.raises(ConfigError, match="not in the smoke zoo; valid choices: resnet18, vit_mini"):
        zoo.upstream_model("resnet34", "smoke")

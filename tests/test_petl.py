"""PETL adapters: zero-initialised, only adapters + head train, conv sees the patch grid."""

import pytest
import torch

from compstudy import models, petl, train
from compstudy.errors import ConfigError
from compstudy.seeding import seed_everything


@pytest.fixture(scope="module")
def backbone():
    seed_everything(0)
    return models.build_model("vit_mini", num_classes=100).eval()


@pytest.mark.parametrize("method", petl.METHODS)
def test_fresh_adapters_leave_the_features_unchanged(backbone, method):
    model = petl.attach(backbone, method, num_classes=10).eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(model.forward_features(x), backbone.forward_features(x), atol=1e-6)
    assert model(x).shape == (3, 10)
    assert len(model.blocks) == len(backbone.blocks)


@pytest.mark.parametrize("method", petl.METHODS)
def test_only_adapters_and_head_are_trainable(backbone, method):
    model = petl.attach(backbone, method, num_classes=10)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter_" in n or n.startswith("head.") for n in trainable)
    assert sum(p.numel() for p in petl.petl_parameters(model)) == petl.count_petl_parameters(model)
    dim, hidden, depth = 64, petl.HIDDEN_DIM, len(model.blocks)
    per_adapter = dim * hidden + hidden + hidden * dim + dim
    if method == "convpass":
        per_adapter += hidden * hidden * 9 + hidden
    assert petl.count_petl_parameters(model) == depth * 2 * per_adapter + dim * 10 + 10
    # the backbone passed in is not touched
    assert all(p.requires_grad for p in backbone.parameters())


def test_training_moves_adapters_not_backbone(backbone):
    from compstudy import data

    model = petl.attach(backbone, "convpass", num_classes=10)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    ds = data.ImageSet("toy", torch.randint(0, 255, (20, 3, 32, 32), dtype=torch.uint8),
                       torch.arange(20) % 10, tuple(str(i) for i in range(10)))
    petl.fit_petl(model, ds, train.FitSettings(1, 1e-2, "adamw"), batch_size=10)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(m.up.weight.abs().sum() > 0 for m in petl.adapter_modules(model))


def test_convpass_conv_mixes_neighbouring_patches_but_not_cls():
    torch.manual_seed(0)
    adapter = petl.Bottleneck(16, 8, grid=(4, 4), num_prefix=1, dropout=0.0).eval()
    with torch.no_grad():
        adapter.up.weight.normal_()
        adapter.conv.weight.normal_()
    x = torch.randn(1, 17, 16)
    base = adapter(x)
    bumped = x.clone()
    bumped[0, 1 + 5] += 1.0  # patch (row 1, col 1)
    diff = (adapter(bumped) - base).abs().sum(-1)[0]
    grid = diff[1:].reshape(4, 4)
    assert diff[0] == 0  # CLS is convolved alone
    assert (grid[0:3, 0:3] > 0).all() and grid[3].sum() == 0 and grid[:, 3].sum() == 0


def test_unknown_method_is_a_one_line_config_error(backbone):
    with pytest.raises(ConfigError, match="unknown PETL method 'lora'; valid choices: convpass, adapter"):
        petl.attach(backbone, "lora", num_classes=10)


def test_checkpoint_round_trip(backbone, tmp_path, monkeypatch):
    monkeypatch.setattr(petl.paths, "ARTIFACTS_DIR", tmp_path)
    model = petl.attach(backbone, "adapter", num_classes=10)
    with torch.no_grad():
        for p in petl.petl_parameters(model):
            p.normal_()
    petl.save_petl(model, "k")
    loaded = petl.load_petl(backbone, "k", num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded(x), model.eval()(x))
    assert petl.load_petl(backbone, "missing", num_classes=10) is None

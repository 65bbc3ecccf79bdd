"""PETL adapters: zero-initialised, only adapters + head train, the conv sees the patch grid."""

import pytest
import timm
import torch

from compstudy import data, train
from compstudy.errors import ConfigError
from compstudy.methods import petl


def tiny_vit(num_classes: int = 100):
    """A 6-block ViT of width 64 on 32-px inputs (4 x 4 patches + CLS), random weights."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=6,
                              num_heads=2, num_classes=num_classes)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32)}
    return model.eval()


def toy_images(n: int = 20, classes: int = 10) -> data.ImageSet:
    g = torch.Generator().manual_seed(0)
    return data.ImageSet("toy", torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                         torch.arange(n) % classes, tuple(str(i) for i in range(classes)))


@pytest.fixture(scope="module")
def backbone():
    return tiny_vit()


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
    assert all(p.requires_grad for p in backbone.parameters())  # the backbone passed in is untouched


def test_training_moves_adapters_not_backbone(backbone):
    model = petl.attach(backbone, "convpass", num_classes=10)
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    petl.fit_petl(model, toy_images(), train.FitSettings(1, 1e-2, "adamw"), batch_size=10, seed=0,
                  progress=False)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(m.up.weight.abs().sum() > 0 for m in petl.adapter_modules(model))


def test_training_is_seeded(backbone):
    settings = train.FitSettings(1, 1e-2, "adamw", warmup_epochs=0.5)
    runs = [petl.task_state(petl.train_petl(backbone, "convpass", toy_images(), settings, 1.0, 10, seed,
                                            progress=False)) for seed in (3, 3, 4)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


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


def test_task_state_round_trip(backbone):
    model = petl.attach(backbone, "adapter", num_classes=10)
    with torch.no_grad():
        for p in petl.petl_parameters(model):
            p.normal_()
    state = petl.task_state(model)
    assert sum(t.numel() for t in state.values()) == petl.count_petl_parameters(model)
    loaded = petl.load_task_state(petl.attach(backbone, "adapter", num_classes=10), state)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(loaded(x), model.eval()(x))
    with pytest.raises(ValueError, match="does not fit"):
        petl.load_task_state(petl.attach(backbone, "convpass", num_classes=10), state)

"""CIFAR VGG / ResNet of chapter 2: layouts, width multiplier, rebuild from spec, save/load, and the
converged akamaster ResNet-56 checkpoint of the mirror."""

import pytest
import torch

from compstudy import assets, data, metrics, train
from compstudy.models import cifar as cm
from compstudy.errors import ConfigError


def test_vgg16_layouts_follow_the_paper():
    full = cm.vgg(10, "vgg16", 1.0)
    assert full.conv_widths() == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    a = cm.vgg(10, "vgg16_a", 1.0)
    assert a.conv_widths() == [32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 256]
    assert full(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # the classifier is Linear(c, 512)-BN1d-ReLU-Linear(512, K)
    assert full.classifier[0].in_features == 512 and full.classifier[0].out_features == 512


def test_width_multiplier_scales_every_layer():
    quarter = cm.vgg(100, "vgg16", 0.25)
    assert quarter.conv_widths()[0] == 16 and quarter.conv_widths()[-1] == 128
    assert quarter.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    net = cm.resnet(10, 20, 0.5)
    assert net.spec["stage_widths"] == [8, 16, 32]
    assert metrics.count_parameters(net) < metrics.count_parameters(cm.resnet(10, 20, 1.0))


@pytest.mark.parametrize("depth, blocks", [(20, 9), (56, 27)])
def test_resnet_has_three_stages_of_basic_blocks(depth, blocks):
    net = cm.resnet(10, depth, 1.0)
    assert len(net.blocks) == blocks
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == depth - 1  # stem + 2 per block; the fc makes depth


def test_resnet56_parameter_count_matches_the_literature():
    # He et al. report 0.85 M parameters for ResNet-56 on CIFAR-10
    assert abs(metrics.count_parameters(cm.resnet(10, 56, 1.0)) / 1e6 - 0.85) < 0.01


def test_bad_depth_and_architecture_are_config_errors():
    with pytest.raises(ConfigError, match="6n\\+2"):
        cm.resnet(10, 21)
    with pytest.raises(ConfigError, match="unknown architecture 'mlp'"):
        cm.build_named("mlp", 10, 1.0)
    with pytest.raises(ConfigError, match="unknown VGG layout"):
        cm.vgg(10, "vgg19")


@pytest.mark.parametrize("builder", [lambda: cm.vgg(10, "vgg16", 0.125), lambda: cm.resnet(10, 20, 0.5)])
def test_save_and_reload_give_identical_outputs(tmp_path, builder):
    torch.manual_seed(0)
    model = builder().eval()
    x = torch.randn(4, 3, 32, 32)
    path = cm.save_model(model, tmp_path / "m.pt", {"accuracy": 0.5})
    loaded, extra = cm.load_model(path)
    assert extra == {"accuracy": 0.5}
    assert torch.equal(model(x), loaded(x))
    # saved as spec + state dict, never as a pickled module
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"spec", "state_dict", "extra"}


def test_rebuild_from_width_config():
    spec = cm.resnet(10, 20, 0.5).spec | {"inner_widths": [3, 4, 5, 6, 7, 8, 9, 10, 11]}
    net = cm.build(spec)
    assert [b.conv1.out_channels for b in net.blocks] == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_models_carry_their_input_normalisation():
    net = cm.resnet(10, 20, 0.25)
    assert net.pretrained_cfg["mean"] == cm.CIFAR_MEAN and net.pretrained_cfg["input_size"] == (3, 32, 32)
    rebuilt = cm.build(net.spec | {"mean": list(cm.IMAGENET_MEAN), "std": list(cm.IMAGENET_STD)})
    assert rebuilt.pretrained_cfg["std"] == cm.IMAGENET_STD


def _mirror_has(name):
    try:
        assets.fetch(name)
    except Exception:  # AssetError offline without a mirror
        return False
    return True


@pytest.mark.skipif(not _mirror_has("cifar10_resnet56"), reason="the mirror's ResNet-56 is not here")
def test_akamaster_resnet56_loads_the_stored_architecture_and_classifies_jpeg_cifar10():
    model = cm.akamaster_resnet(56)
    assert model.spec["depth"] == 56 and model.spec["stage_widths"] == [16, 32, 64]
    assert model.spec["inner_widths"] == [16] * 9 + [32] * 9 + [64] * 9
    assert metrics.count_parameters(model) == 853_018
    assert model.pretrained_cfg["mean"] == cm.IMAGENET_MEAN and model.pretrained_cfg["best_prec1"] > 93
    test = data.few_shot(data.load_dataset("cifar10", "test"), 50, seed=0)  # 500 JPEG test images
    accuracy = train.evaluate(model, data.make_loader(test, 250, shuffle=False))["accuracy"]
    assert accuracy >= 0.75, accuracy  # 84 % on 2,000 (mirror README); 93.6 % on the PNG originals


def test_akamaster_depths_are_checked():
    with pytest.raises(ConfigError, match="unknown akamaster CIFAR-10 ResNet depth 32"):
        cm.akamaster_resnet(32)

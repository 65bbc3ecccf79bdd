"""The ImageNet upstream models: real weights, our DeiT converter, resolutions, random init."""

import pytest
import timm
import torch
from timm.data import create_transform, resolve_data_config

from compstudy import assets, data, models
from compstudy.errors import ConfigError
from compstudy.models import upstream


def _stub_hits(model) -> int:
    transform = create_transform(**resolve_data_config({}, model=model))
    stubs = data.imagenet_stubs()
    with torch.no_grad():
        predictions = model(torch.stack([transform(image) for _, image, _ in stubs])).argmax(1)
    return sum(int(p) == truth for p, (_, _, truth) in zip(predictions, stubs))


def test_efficientnet_lite0_classifies_every_stub_image():
    assert _stub_hits(models.upstream_model("efficientnet_lite0")) == 16


def test_deit_tiny_classifies_at_least_15_stub_images():
    assert _stub_hits(models.upstream_model("deit_tiny")) >= 15


def test_the_deit_converter_output_loads_strictly_into_timm():
    state = upstream.convert_deit_mat(assets.fetch("deit_tiny_mat"))
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    assert sum(v.numel() for v in state.values()) == 5_717_416
    assert state["blocks.3.norm2.weight"].shape == (192,) and state["patch_embed.proj.bias"].shape == (192,)


def test_deit_at_a_smaller_resolution_resamples_its_position_embedding():
    model = models.upstream_model("deit_tiny", 96)
    assert model.pos_embed.shape == (1, 1 + 36, 192) and model.pretrained_cfg["input_size"] == (3, 96, 96)
    batch = data.to_float(data.load_dataset("digits", "test").images[:2])
    assert model(models.adapt_input(model, batch)).shape == (2, 1000)
    with pytest.raises(ConfigError, match="divisible by 16"):
        models.upstream_model("deit_tiny", 100)


def test_preprocessing_travels_in_pretrained_cfg():
    cnn, vit = models.upstream_model("efficientnet_lite0", 64), models.upstream_model("deit_tiny", 64)
    assert cnn.pretrained_cfg["mean"] == (0.5, 0.5, 0.5) and cnn.pretrained_cfg["input_size"] == (3, 64, 64)
    assert vit.pretrained_cfg["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert {cnn.pretrained_cfg["interpolation"], vit.pretrained_cfg["interpolation"]} == {"bicubic"}


def test_random_init_has_the_same_architecture_and_other_weights():
    torch.manual_seed(0)
    random = models.upstream_model("efficientnet_lite0", 64, pretrained=False)
    trained = models.upstream_model("efficientnet_lite0", 64)
    assert random.pretrained_cfg == trained.pretrained_cfg
    assert not torch.equal(random.conv_stem.weight, trained.conv_stem.weight)


def test_unknown_upstream_model_and_bad_resolution():
    with pytest.raises(ConfigError, match="unknown upstream model 'resnet9'"):
        models.upstream_model("resnet9")
    with pytest.raises(ConfigError, match="resolution"):
        models.upstream_model("efficientnet_lite0", 8)


def test_gain_table_gives_points_per_target_and_the_cost_against_the_smallest_side():
    import pandas as pd

    from compstudy.studies import upstream as study

    probes = pd.DataFrame([
        {"model": m, "resolution": r, "init": init, "target": t, "probe_accuracy": acc, "test_images": 300}
        for m, r, t, init, acc in [
            ("vit", 64, "a", "imagenet", 0.50), ("vit", 64, "a", "random", 0.40),
            ("vit", 64, "b", "imagenet", 0.90), ("vit", 64, "b", "random", 0.85),
            ("vit", 96, "a", "imagenet", 0.70), ("vit", 96, "a", "random", 0.40),
            ("vit", 96, "b", "imagenet", 0.95), ("vit", 96, "b", "random", 0.80)]])
    # the larger side happens to train faster on a noisy host: the cost stays against the smallest
    costs = pd.DataFrame([{"model": "vit", "resolution": 96, "train_img_s": 25.0},
                          {"model": "vit", "resolution": 64, "train_img_s": 20.0}])
    gains = study.probe_gains(probes)
    gap = gains.set_index(["model", "resolution", "target"]).loc[("vit", 96, "a")]
    assert gap.gain == pytest.approx(0.3) and gap.gain_low < 0.3 < gap.gain_high
    assert gap.gain_high - gap.gain_low == pytest.approx(0.15, abs=0.02)  # two Wilson intervals on 300 images
    table = study.gain_table(gains, costs, ["b", "a"])
    assert list(table.columns) == ["b", "a", "training cost (x)"]
    assert table.loc[("vit", 64)].tolist() == [5.0, 10.0, 1.0]
    assert table.loc[("vit", 96)].tolist() == [15.0, 30.0, 0.8]

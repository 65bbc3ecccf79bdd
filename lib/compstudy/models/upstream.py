"""The ImageNet-pretrained upstream models every chapter starts from.

Offline (``cpu`` and ``smoke`` profiles), through the asset layer:

- ``efficientnet_lite0``: timm ``tf_efficientnet_lite0`` (Tan & Le 2019, the Lite variant
  without squeeze-excitation and with ReLU6), a compact CNN that stands in for the papers'
  ResNets. Its ImageNet weights ship in a package on the package index; the tensors are in
  timm's order, so they load by position.
- ``deit_tiny``: timm ``deit_tiny_patch16_224`` (Touvron et al. 2021), 12 blocks of width
  192, the smallest model DC-ViT compresses. Its weights come from a per-tensor ``.mat``
  export, converted here (:func:`convert_deit_mat`).

Both carry their preprocessing in timm's ``pretrained_cfg`` (mean, std, interpolation,
crop_pct, input_size). The input resolution is each chapter's parameter: the CNN takes any
size, and DeiT's position embedding is resampled to the new patch grid.

The ``paper`` profile names the papers' own timm checkpoints (:data:`PAPER_CHECKPOINTS`),
which timm downloads; they need internet or a filled Hugging Face cache.
"""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import timm
import torch
from timm.layers import resample_abs_pos_embed
from torch import nn

from .. import assets, cache
from ..errors import ConfigError, unknown_choice

OFFLINE = ("efficientnet_lite0", "deit_tiny")
PAPER_CHECKPOINTS = {
    "resnet18": "resnet18.tv_in1k",  # Hidden Cost, ILM-VP
    "resnet50": "resnet50.tv2_in1k",  # Hidden Cost (lottery tickets)
    "vit_base_patch16": "vit_base_patch16_224.augreg_in21k",  # SLS (ImageNet-21k ViT-B/16)
    "deit_tiny_fb": "deit_tiny_patch16_224.fb_in1k",  # DC-ViT
    "deit_small_fb": "deit_small_patch16_224.fb_in1k",  # DC-ViT
    "deit_base_fb": "deit_base_patch16_224.fb_in1k",  # DC-ViT, PRACTISE comparison
}
ARCHITECTURES = {"efficientnet_lite0": "tf_efficientnet_lite0", "deit_tiny": "deit_tiny_patch16_224"}
PATCH = 16  # DeiT-Tiny's patch side


def upstream_names() -> tuple[str, ...]:
    return OFFLINE + tuple(PAPER_CHECKPOINTS)


_DEIT_PATTERNS = [  # .mat file name -> timm key (the mirror README's table)
    (re.compile(r"blocks_(\d+)_(attn_qkv|attn_proj|mlp_fc1|mlp_fc2)_(weight|bias)_fl_\d+\.mat$"),
     lambda m: f"blocks.{m[1]}.{m[2].replace('_', '.')}.{m[3]}"),
    (re.compile(r"cpu_p_qudq_(\d+)_LN_(weight|bias)_fl_\d+\.mat$"),
     lambda m: (f"norm.{m[2]}" if int(m[1]) == 24
                else f"blocks.{int(m[1]) // 2}.norm{1 + int(m[1]) % 2}.{m[2]}")),
    (re.compile(r"head_(weight|bias)_fl_\d+\.mat$"), lambda m: f"head.{m[1]}"),
    (re.compile(r"patch_embed_proj_(weight|bias)_\d+\.mat$"), lambda m: f"patch_embed.proj.{m[1]}"),
    (re.compile(r"p_cls_token_expand_B_neg1_neg1\.mat$"), lambda m: "cls_token"),
    (re.compile(r"p_pos_embed_cpu\.mat$"), lambda m: "pos_embed"),
]


def convert_deit_mat(archive_path) -> dict[str, torch.Tensor]:
    """timm ``deit_tiny_patch16_224`` state dict from the per-tensor ``.mat`` export.

    Each file holds one variable ``data``; vectors are stored as 1 x N rows. File names
    carry a varying fixed-point suffix (``_fl_N``), matched by pattern; the export's
    activation dumps (``p_qact*``) are not weights and are skipped.
    """
    from scipy.io import loadmat

    state = {}
    with zipfile.ZipFile(archive_path) as archive:
        for name in archive.namelist():
            base = name.rsplit("/", 1)[-1]
            for pattern, key in _DEIT_PATTERNS:
                match = pattern.match(base)
                if match:
                    array = loadmat(io.BytesIO(archive.read(name)))["data"]
                    state[key(match)] = torch.from_numpy(np.array(array, dtype=np.float32))
                    break
    template = timm.create_model(ARCHITECTURES["deit_tiny"], pretrained=False).state_dict()
    missing = sorted(set(template) - set(state))
    if missing:
        raise ConfigError(f"DeiT-Tiny archive lacks tensors for {missing[:3]} (+{len(missing) - 3 if len(missing) > 3 else 0} more)")
    return {k: state[k].reshape(template[k].shape) for k in template}


def _efficientnet_state() -> dict[str, torch.Tensor]:
    """The Lite0 weights, renamed by position to timm's keys (shapes checked)."""
    stored = torch.load(assets.fetch("efficientnet_lite0"), map_location="cpu", weights_only=True)
    template = timm.create_model(ARCHITECTURES["efficientnet_lite0"], pretrained=False).state_dict()
    if len(stored) != len(template):
        raise ConfigError(f"EfficientNet-Lite0 weights hold {len(stored)} tensors, timm expects {len(template)}")
    state = {}
    for (key, expected), (stored_key, tensor) in zip(template.items(), stored.items()):
        if tensor.shape != expected.shape:
            raise ConfigError(f"EfficientNet-Lite0 tensor {stored_key} {tuple(tensor.shape)} does not "
                              f"match timm's {key} {tuple(expected.shape)}")
        state[key] = tensor
    return state


def imagenet_state(name: str) -> dict[str, torch.Tensor]:
    """The converted ImageNet state dict of an offline upstream model, cached under artifacts/."""
    asset = {"efficientnet_lite0": "efficientnet_lite0", "deit_tiny": "deit_tiny_mat"}[name]
    build = {"efficientnet_lite0": _efficientnet_state,
             "deit_tiny": lambda: convert_deit_mat(assets.fetch("deit_tiny_mat"))}[name]
    return cache.cached("upstream", {"model": name, "asset": assets.MANIFEST[asset].sha256},
                        [__name__], build, load=lambda p: torch.load(p, weights_only=True))


def upstream_model(name: str, resolution: int | None = None, pretrained: bool = True) -> nn.Module:
    """The ImageNet-pretrained ``name`` in eval mode, expecting ``resolution``-px inputs.

    ``resolution`` (default: the model's 224) is recorded in ``pretrained_cfg["input_size"]``,
    which :func:`compstudy.models.adapt_input` resizes to. DeiT needs a multiple of its
    patch side; its position embedding is resampled (bicubic) to the smaller grid.
    ``pretrained=False`` gives the same architecture and preprocessing at timm's random
    initialisation (seed torch first): the baseline pretrained features must beat.
    """
    if name not in upstream_names():
        raise unknown_choice("upstream model", name, upstream_names())
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int)
                                   or resolution < 16):
        raise ConfigError(f"resolution must be an integer of at least 16 px, got {resolution!r}")
    if name in PAPER_CHECKPOINTS:
        try:
            model = timm.create_model(PAPER_CHECKPOINTS[name], pretrained=pretrained)
        except (OSError, RuntimeError) as error:  # hub unreachable and no local copy
            raise ConfigError(f"cannot load {PAPER_CHECKPOINTS[name]!r} offline "
                              f"({type(error).__name__}); run the paper profile with internet or "
                              "a filled HF_HUB_CACHE") from error
        side = resolution or model.pretrained_cfg["input_size"][-1]
        if resolution is not None and hasattr(model, "set_input_size"):
            model.set_input_size(img_size=resolution)
    else:
        side = resolution or 224
        if name == "deit_tiny":
            if side % PATCH:
                raise ConfigError(f"DeiT-Tiny needs a resolution divisible by {PATCH}, got {side}")
            model = timm.create_model(ARCHITECTURES[name], pretrained=False, img_size=side)
        else:
            model = timm.create_model(ARCHITECTURES[name], pretrained=False)
            model.pretrained_cfg = {**model.pretrained_cfg, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
        if pretrained:
            state = dict(imagenet_state(name))
            if name == "deit_tiny":
                state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], (side // PATCH,) * 2,
                                                            num_prefix_tokens=1)
            model.load_state_dict(state, strict=True)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, side, side)}
    return model.eval()

"""Measured CPU speed-up ÷ MAC reduction of every structured model of chapter 2.

Models at the widths of the notebook's cpu defaults (VGG-16 and ResNet-20 with their width
multipliers): VGG-16-A (L1), ResNet-A/B (L1), a 50 % slimmed VGG-16 and the uniformly thinned
VGG-16 with its parameters. Weights are random (speed does not depend on them); the slimmed
widths come from random BN scales, so they vary by layer as trained ones do. Speed-up: batch 1
and 64, 2 threads, each large model timed in turns with its pruned models and each round's
times paired (``pruning_value.time_speedups``, as chapter 2 times them), with the 95 %
interval over the rounds. A ratio of 1 turns every saved MAC into time.
Run: ``.venv/bin/python benchmarks/bench_02_speedup.py [--width-scale S] [--forwards N]``.
"""

from __future__ import annotations

import argparse

import torch

from compstudy import claims, config, metrics
from compstudy.methods import structured
from compstudy.models import cifar as cm
from compstudy.seeding import seed_everything
from compstudy.studies.pruning_value import speedup_table, time_speedups


def models(width_scale: float) -> dict[str, tuple[str, torch.nn.Module]]:
    p = config.notebook_parameters("02_pruning_value")
    vgg_w, res_w = p["vgg_width"] * width_scale, p["resnet_width"] * width_scale
    depth = p["resnet_depth"]
    vgg = cm.vgg(10, "vgg16", vgg_w).eval()
    res = cm.resnet(10, depth, res_w).eval()
    out = {"VGG-16": ("VGG-16", vgg), f"ResNet-{depth}": (f"ResNet-{depth}", res)}
    floor = p["min_channels"]
    out["VGG-16-A"] = ("VGG-16", structured.prune_vgg(vgg, structured.vgg_l1_keep(
        vgg, p["vgg_layer_ratios"], floor)))
    for variant in structured.LI_STAGE_RATIOS:
        out[f"ResNet-{depth}-{variant}"] = (f"ResNet-{depth}", structured.li_resnet(
            res, variant, p["resnet_stage_ratios"].get(variant), floor))
    slim_src = cm.vgg(10, "vgg16", vgg_w).eval()
    for i, (_, bn) in enumerate(slim_src.conv_bn_pairs()):  # deeper layers more prunable, as found
        bn.weight.data = torch.rand(bn.num_features) * (1.0 - 0.06 * i)
    slim = structured.prune_vgg(slim_src, structured.slimming_keep(slim_src, p["slim_ratio"], floor))
    out[f"VGG-16 slimmed {round(100 * p['slim_ratio'])}%"] = ("VGG-16", slim)
    out["VGG-16 uniform (params of slimmed)"] = ("VGG-16", structured.uniform_vgg_like(
        10, metrics.count_parameters(slim), vgg_w).eval())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width-scale", type=float, default=1.0,
                        help="multiply the cpu widths (e.g. 8 for full-width VGG-16)")
    parser.add_argument("--forwards", type=int, default=100,
                        help="timing rounds per batch (one forward of each model per round)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    seed_everything(0, threads=args.threads)
    batches = [1, 64]
    table = speedup_table(time_speedups(models(args.width_scale), batches, args.forwards), batches)
    print(f"threads={args.threads}, width scale={args.width_scale}")
    print(f"{'model':<36}{'MACs (M)':>10}{'MAC red.':>10}" + "".join(
        f"{'speed-up b' + str(b):>22}{'ratio b' + str(b):>10}" for b in batches))
    for _, r in table.iterrows():
        if r.model == r.large:
            continue
        print(f"{r.model:<36}{r.macs / 1e6:>10.2f}{r.mac_reduction:>10.2f}" + "".join(
            f"{claims.interval_text(r[f'speedup_b{b}'], r[f'speedup_b{b}_low'], r[f'speedup_b{b}_high']):>22}"
            f"{r[f'speedup_over_mac_b{b}']:>10.2f}" for b in batches))


if __name__ == "__main__":
    main()

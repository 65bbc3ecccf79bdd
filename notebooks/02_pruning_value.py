# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Rethinking the value of network pruning
#
# Liu et al. (ICLR 2019) train a large network, prune it, fine-tune the survivors (**FT**), and
# compare with the *same pruned architecture* trained from a fresh random initialisation, for
# as many epochs as the large model (**Scratch-E**) or for the same compute (**Scratch-B**:
# epochs × MACs(large)/MACs(pruned), capped at 2×). Three method families: predefined
# structured (L1-norm filter pruning of VGG-16-A and ResNet-A/B), automatic structured
# (network slimming) and unstructured (global weight magnitude). All models are CIFAR-style
# networks trained from scratch here. The main run's CIFAR-10 stand-in is scikit-learn's
# handwritten `digits` (10 classes, all 1,257 training images, the whole 540-image test
# split), on which these small networks train reliably; the runs `source10` (the suite's
# source images labelled by style, 10 classes) and `source100` (the 100-class source task, the
# CIFAR-100 stand-in) train L1 VGG-16-A on the suite's own source data; `paper` runs CIFAR-10
# and CIFAR-100.

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | paper (set by the runner)
run = "main"  # name of the config file (set by the runner)
seed = 0  # data seed; the model seeds are `seeds`
dataset = "digits"  # 10 classes, the CIFAR-10 stand-in; "source10" / "source" are the suite's own
train_per_class = -1  # generated sets: images per class; real sets: a seeded subset (-1: all)
test_per_class = 60  # generated sets only; real sets use their whole test split
seeds = [0, 1, 2]
methods = ["l1_vgg", "l1_resnet", "slimming", "unstructured"]
regimes = ["finetune", "scratch_e", "scratch_b"]
vgg_width = 0.125  # width multiplier of VGG-16; 1.0 gives 64 to 512 channels
resnet_depth = 20  # 6n+2; the paper's is 56
resnet_width = 0.5  # width multiplier of the 16/32/64 stages
vgg_layer_ratios = [0.5, 0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]  # VGG-16-A
resnet_stage_ratios = {"B": [0.6, 0.3, 0.1]}  # paper profile adds "A": [0.1, 0.1, 0.1]
slim_lambda = 0.001  # λ of the BN-scale L1 penalty (paper: 1e-4 for VGG over 160 epochs)
slim_ratio = 0.5  # fraction of BN channels removed by the global threshold
unstructured_sparsity = 0.6  # fraction of conv weights masked (paper script default)
uniform_check = True  # train a uniformly thinned VGG with the slimmed model's parameters
base_epochs = 10  # 390 steps: VGG-16 reaches about 95 % on digits
base_lr = 0.05
base_schedule = "step"  # ×0.1 at 50 % and 75 % (paper)
ft_epochs = 3  # about a quarter of base_epochs, as 40 of 160 in the paper
ft_lr = 0.001  # constant, as in the paper's CIFAR fine-tuning
ft_schedule = "constant"
weight_decay = 0.0001
batch_size = 32  # 39 steps per epoch on 1,257 images
scratch_b_cap = 2.0
latency_batches = [1, 64]
latency_min_run_time = 0.3  # seconds of timing per model and batch size
measure_speed = True

# %%
import json

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import display

from compstudy import plots, structured
from compstudy.results import RunStore
from compstudy.seeding import seed_everything
from compstudy.studies.pruning_value import Config

cfg = Config.resolve(globals())
seed_everything(cfg.seed)
plots.set_style()
display(cfg.as_table())

# %%
structured.validate_config(cfg.params)  # every user-fixable mistake stops here, before training
study = structured.Study(cfg.params)
print(f"{cfg.dataset}: {len(study.train_set)} train / {len(study.test_set)} test images, "
      f"{study.num_classes} classes; pruned models: {study.targets()}")

# %% [markdown]
# ## The sweep
#
# One row per (method, architecture, regime, seed). Large models are trained once per seed and
# cached under `artifacts/02_pruning_value/` (keyed by everything that determines them); each
# finished row is written at once, so an interrupted run resumes where it stopped.

# %%
store = RunStore(cfg.results_dir, key=["method", "arch", "regime", "seed"])
for unit in store.pending(study.units()):
    store.add(dict(unit) | study.run(unit))
runs = store.frame
display(runs.drop(columns=["widths"]).round(3))

# %% [markdown]
# ## Tables in the paper's form
#
# Test accuracy (%), mean ± std over the seeds, one table per method family, with the
# paper's row (papers.md §2.3) under ours. The paper's numbers are CIFAR-10 (ImageNet for
# unstructured) at full scale: compare the *pattern* across columns, not the level.

# %%
for method in cfg.methods:
    print(method)
    display(structured.paper_form_table(runs, study, method))

# %% [markdown]
# Paired differences between regimes (same seed), in accuracy points, with the standard
# error over seeds: a difference within about two standard errors is "within noise".

# %%
differences = structured.regime_differences(runs)
display(differences.round(2))

# %% [markdown]
# ## Accuracy versus MACs for the three regimes
#
# Unstructured models are placed at their nonzero-conv MACs (the paper's count); they
# keep dense shapes and run no faster.

# %%
summary = (runs.groupby(["method", "arch", "regime"], as_index=False)
           .agg(accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"), macs=("macs", "mean")))
fig, axes = plt.subplots(1, len(cfg.methods), figsize=(3.6 * len(cfg.methods), 3.4), squeeze=False)
for ax, method in zip(axes[0], cfg.methods):
    part = summary[summary.method == method]
    for regime, group in part.groupby("regime"):
        ax.errorbar(group.macs / 1e6, 100 * group.accuracy, yerr=100 * group.accuracy_std.fillna(0),
                    fmt="o", capsize=3, label=structured.REGIME_COLUMNS[regime])
    ax.set(title=method, xlabel="MACs (M)", ylabel="test accuracy (%)")
axes[0][-1].legend(fontsize=8, loc="lower right")
fig.suptitle(f"{cfg.dataset}, mean ± std over seeds {cfg.seeds}", y=1.02)
plots.save_figure(fig, cfg.figures_dir / "accuracy_vs_macs.png")
plt.show()

# %% [markdown]
# ## What network slimming keeps, layer by layer
#
# Kept conv widths of the slimmed VGG-16 (one line per seed) beside the uniformly thinned VGG-16
# with the same number of parameters and the unpruned widths.

# %%
if "slimming" in cfg.methods:
    width_rows = []
    for _, r in runs[runs.method == "slimming"].iterrows():
        name = {"unpruned": "unpruned", "finetune": "slimmed", "uniform_e": "uniform (equal params)"}.get(r.regime)
        if name is not None:
            width_rows += [{"layer": i + 1, "width": w, "model": name, "seed": r.seed}
                           for i, w in enumerate(json.loads(r.widths))]
    widths = pd.DataFrame(width_rows)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    sns.lineplot(data=widths, x="layer", y="width", hue="model", units="seed", estimator=None,
                 marker="o", ax=ax)
    ax.set(xlabel="conv layer of VGG-16", ylabel="channels", xticks=range(1, 14),
           title=f"slimming {cfg.slim_ratio:.0%} (λ = {cfg.slim_lambda}) vs uniform thinning")
    plots.save_figure(fig, cfg.figures_dir / "slimming_widths.png")
    plt.show()
    display(widths.pivot_table(index="layer", columns="model", values="width", aggfunc="mean").T.round(1))

# %% [markdown]
# ## Measured speed-up versus MAC reduction (structured models only)
#
# CPU latency with the thread count fixed, at batch 1 and a throughput batch, of every
# structured model of the first seed (random inputs; `torch.utils.benchmark`, median over
# blocks). A point on the diagonal turns every saved MAC into time.

# %%
if cfg.measure_speed:
    speed_store = RunStore(cfg.results_dir / "speed", key=["model"])
    models_to_time = study.structured_models(cfg.seeds[0])
    for unit in speed_store.pending([{"model": name} for name in models_to_time]):
        large_label, model = models_to_time[unit["model"]]
        speed_store.add(unit | {"large": large_label} | structured.measure_speed(
            model, cfg.latency_batches, cfg.latency_min_run_time))
    speed = structured.speedup_table(speed_store.frame, cfg.latency_batches)
    display(speed.round(3))
    fig, ax = plt.subplots(figsize=(5, 4))
    for b in cfg.latency_batches:
        ax.scatter(speed.mac_reduction, speed[f"speedup_b{b}"], label=f"batch {b}")
    top = max(speed.mac_reduction.max(), *(speed[f"speedup_b{b}"].max() for b in cfg.latency_batches)) * 1.1
    ax.plot([0, top], [0, top], "k--", lw=1, label="speed-up = MAC reduction")
    for _, r in speed.iterrows():
        ax.annotate(r.model, (r.mac_reduction, r[f"speedup_b{cfg.latency_batches[-1]}"]), fontsize=7)
    ax.set(xlabel="MAC reduction (×)", ylabel="measured CPU speed-up (×)", xlim=(0.8, top), ylim=(0, top))
    ax.legend(fontsize=8)
    plots.save_figure(fig, cfg.figures_dir / "speedup_vs_macs.png")
    plt.show()

# %% [markdown]
# Unstructured models, by contrast, are reported by their nonzero parameters only:

# %%
sparse = runs[(runs.method == "unstructured")]
if not sparse.empty:
    display(sparse.groupby(["arch", "regime"])[["params", "nonzeros", "macs", "epochs"]].mean().round(0))

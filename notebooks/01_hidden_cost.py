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
# # 01 · The hidden cost of compression
#
# Misra et al. transfer dense and compressed ImageNet models to downstream tasks with visual
# prompting (VP: a learned border around the input plus a label mapping onto the source
# classes, the model frozen) and with linear probing (LP), and report that compression costs
# VP accuracy, most with little data, and that sparse sources are worse calibrated after VP
# while quantized ones are not. Here the dense source is ImageNet EfficientNet-Lite0; its
# sparse versions are distilled from it on unlabeled proxy images by five methods, its
# quantized version is int8 fake-quantized, and every model is transferred to real and
# synthetic targets with RLM / FLM / ILM VP and LP at several few-shot budgets.

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | paper (set by the runner)
run = "main"  # name of the config file (set by the runner)
seed = 0  # proxy split, distillation batches, test-set draw
source_model = "efficientnet_lite0"
proxy_dataset = "cifar10"  # unlabeled proxy images come from its train split
proxy_per_class = 2500  # proxy part of that split; transfer runs never draw from it
kd_per_class = 96  # proxy images per class used for distillation
agreement_per_class = 100  # held-out proxy images per class: agreement with the dense model
calibration_per_class = 26  # proxy images per class that set the int8 activation ranges
kd_resolution = 48  # side of the proxy images for distillation, agreement and calibration
sparse_families = {"oneshot": [0.5, 0.8, 0.9], "gmp": [0.5, 0.8, 0.9], "imp": [0.5, 0.8, 0.9],
                   "acdc": [0.5, 0.8, 0.9], "rigl": [0.5, 0.8, 0.9]}
kd_recipe = {"steps": 30, "batch_size": 32, "lr": 0.0003, "temperature": 2.0}
quant_bits = [8]  # fake-quantized models (weight and activation bits)
targets = ["cifar10", "fashion_mnist", "mnist", "digits", "far"]
synthetic_per_class = 200  # generated train / test images per class of synthetic targets
test_per_class = 100  # test images per class (digits: its whole test split)
shots = [4, 12, 36]  # training images per class
seeds = [0, 1, 2]  # transfer seeds: few-shot draw, RLM permutation, batch order, probe init
dense_methods = ["rlm", "flm", "ilm", "lp"]
compressed_methods = {"ilm": ["fashion_mnist", "mnist", "digits", "far"],
                      "lp": ["cifar10", "fashion_mnist", "mnist", "digits", "far"]}  # targets per method
sparse_seeds = "latin"  # latin: one seed per sparse model (family + sparsity index); all
# side each target is resized to: the window of the VP canvas (LP reads the image at the canvas side)
vp_image_sides = {"cifar10": [112], "fashion_mnist": [40], "mnist": [40], "digits": [40], "far": [40]}
vp_border = 4  # prompt width in pixels on each side; the canvas side is the image side plus twice this
vp_epochs = 2
vp_lr = 0.03
vp_batch_size = 16
lp_epochs = 30
lp_lr = 0.01
lp_batch_size = 128
ece_bins = 15
ece_margin = 2.0  # claim 5: the ECE points a quantized source may add (non-inferiority)
workers = 2  # processes that transfer side by side, one thread each (one per core); 0: in this process

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import display
from myst_nb import glue

from compstudy import claims, plots, scale
from compstudy.seeding import seed_everything
from compstudy.studies import hidden_cost

cfg = hidden_cost.Config.resolve(globals())
seed_everything(cfg.seed)
plots.set_style()
display(cfg.as_table())
results = hidden_cost.run(cfg)
runs, sources, pairs = results.runs, results.sources, results.pairs
vp_sides = sorted({side for sides in cfg.vp_image_sides.values() for side in sides})
claims.glue_values({
    "n_sparse_models": sum(len(levels) for levels in cfg.sparse_families.values()),
    "n_families": len(cfg.sparse_families),
    "sparsities": claims.and_join(sorted({s for levels in cfg.sparse_families.values() for s in levels})),
    "kd_steps": int(cfg.recipe.steps), "kd_batch_size": int(cfg.recipe.batch_size),
    "kd_temperature": float(cfg.recipe.temperature), "kd_resolution": cfg.kd_resolution,
    "test_per_class": cfg.test_per_class, "shots": claims.and_join(cfg.shots),
    "seeds": claims.and_join(cfg.seeds), "vp_border": cfg.vp_border,
    "vp_sides": claims.and_join(vp_sides), "vp_canvases": claims.and_join(cfg.canvas(s) for s in vp_sides),
    "vp_epochs": cfg.vp_epochs, "vp_batch_size": cfg.vp_batch_size, "vp_lr": cfg.vp_lr,
    "lp_epochs": cfg.lp_epochs, "lp_lr": cfg.lp_lr, "ece_bins": cfg.ece_bins, "ece_margin": cfg.ece_margin})
scale.record_scale(cfg, models=sources.model.tolist(), resolution={t: cfg.vp_image_sides[t] for t in cfg.targets},
                   targets=cfg.targets, budgets={"images per class": cfg.shots, "VP epochs": cfg.vp_epochs,
                                                 "distillation steps": int(cfg.recipe.steps)},
                   seeds=cfg.seeds, test_images_per_target=results.test_images)

# %% [markdown]
# ## The sources
#
# Every sparse model is distilled from the dense one on proxy images from CIFAR-10's train
# split that no transfer run uses (the proxy part below is disjoint from every training and
# test image of the sweep). Source accuracy is measured twice without ImageNet data: top-1
# (and top-5) agreement with the dense model on held-out proxy images, and top-1 accuracy on
# the 16 ImageNet stub images at 224 px. Sparsity counts all conv weights, depthwise included.

# %%
shown = sources[["model", "compression", "conv_sparsity", "agreement_top1", "agreement_top5",
                 "stubs_correct", "build_cpu_seconds"]].round(3)
display(shown)
glue("sources_table", shown.set_index("model"), display=False)
glue("proxy_images", len(results.proxy.kd) + len(results.proxy.agreement) + len(results.proxy.calibration),
     display=False)
glue("kd_images", len(results.proxy.kd), display=False)
glue("agreement_images", len(results.proxy.agreement), display=False)
claims.glue_values(100 * sources.groupby("compression").agreement_top1.agg(["max", "min"]).stack(),
                   prefix="agreement_")

fig = hidden_cost.sources_figure(sources)
plots.publish(fig, cfg.figures_dir / "sources.png", "sources_figure")

# %% [markdown]
# Per-layer sparsity of the sparse models (global magnitude ranks the raw weights, before
# BatchNorm is folded, so no layer is pruned away).

# %%
layers = results.layers
if len(layers):
    fig, ax = plt.subplots(figsize=(9, 3))
    top = layers[layers.sparsity == layers.sparsity.max()].copy()
    top["index"] = top.groupby("family").cumcount()
    sns.scatterplot(data=top, x="index", y="layer_sparsity", hue="kind", style="family", ax=ax, s=18)
    ax.set(xlabel="conv layer (input to output)", ylabel="layer sparsity",
           title=f"sparse models at {round(100 * top.sparsity.max())} %")
    plots.publish(fig, cfg.figures_dir / "layer_sparsity.png", "layers_figure")
    glue("layer_sparsity_max", 100 * float(layers.layer_sparsity.max()), display=False)

# %% [markdown]
# ## Transfer: accuracy against budget
#
# Dense model, every target and method; mean and 95 % interval over seeds. Each unit is a row
# of `runs.csv` (model, target, method, budget, seed and image side are typed columns).

# %%
dense_runs = runs[runs.compression == "dense"].assign(accuracy_pct=lambda f: 100 * f.accuracy)
grid = sns.relplot(data=dense_runs, x="shots", y="accuracy_pct", hue="method", col="target",
                   col_wrap=min(len(cfg.targets), 5), kind="line", marker="o", errorbar=("ci", 95),
                   height=2.6, aspect=1.0, facet_kws={"sharey": False})
grid.set_axis_labels("images per class", "test accuracy (%)")
plots.publish(grid.figure, cfg.figures_dir / "accuracy_vs_budget.png", "accuracy_figure")
mappings = dense_runs.pivot_table(index=["target", "shots"], columns="method", values="accuracy_pct").round(1)
display(mappings)
glue("mappings_table", mappings, display=False)
headline = dense_runs[(dense_runs.target == cfg.targets[0]) & (dense_runs.shots == max(cfg.shots))]
glue("headline_target", cfg.targets[0], display=False)
claims.glue_values(headline.groupby("method").accuracy_pct.mean(), prefix="headline_")
glue("chance", 100 / int(dense_runs.classes.iloc[0]), display=False)

# %% [markdown]
# ## The dense − sparse gap against budget, per family
#
# Dense minus sparse test accuracy of the same target, method, budget and seed (points), pooled
# over sparsities and targets, with 95 % t-intervals. A positive gap is a cost of sparsity.

# %%
sparse_pairs = pairs[pairs.compression == "sparse"]
if len(sparse_pairs):
    fig = hidden_cost.gap_budget_figure(sparse_pairs, cfg.shots)
    plots.publish(fig, cfg.figures_dir / "gap_vs_budget.png", "gap_budget_figure")
    by_sparsity = hidden_cost.interval_frame(sparse_pairs, ["method", "family", "sparsity"], "gap")
    fig = hidden_cost.gap_sparsity_figure(sparse_pairs)
    plots.publish(fig, cfg.figures_dir / "gap_vs_sparsity.png", "gap_sparsity_figure")
    gap_table = by_sparsity.round(2)
    display(gap_table)
    glue("gap_table", gap_table.set_index(["method", "family", "sparsity"]), display=False)

# %% [markdown]
# Distillation shows the students CIFAR-10 images. Does that make them look better on CIFAR-10
# than elsewhere under LP? The LP gap on the proxy's own dataset minus the LP gap on the other
# targets, paired by sparse model (points; negative: the students are favoured there).

# %%
domain = results.domain
if domain is not None:
    gap = claims.interval_text(domain["effect"], domain["ci_low"], domain["ci_high"], sign="+")
    print(f"LP gap on {cfg.proxy_dataset} minus elsewhere: {gap} points over {domain['n']} models")
    claims.glue_values(domain, prefix="domain_")

# %% [markdown]
# ## Calibration
#
# Reliability of the pooled ILM-VP test predictions of the dense model, the sparse models at
# the highest sparsity and the quantized model, on the targets, budgets and seeds the sparse
# models were transferred to; ECE uses 15 equal-width bins over the softmax of the mapped logits.

# %%
bins = hidden_cost.reliability(cfg, runs)
if len(bins):
    fig = hidden_cost.reliability_figure(bins, cfg.ece_bins)
    plots.publish(fig, cfg.figures_dir / "reliability.png", "reliability_figure")
ece = runs[runs.method == "ilm"].groupby("model", sort=False)[["accuracy", "ece", "mean_confidence"]].mean()
display((100 * ece).round(1))
glue("ece_table", (100 * ece).round(1), display=False)

# %% [markdown]
# ## Trainable values and cost
#
# VP trains the border of the canvas, whatever the number of target classes; LP trains a
# linear head on the 1,280 pooled features.

# %%
params = hidden_cost.parameter_table(runs)
display(params)
glue("parameters_table", params.set_index("method"), display=False)
glue("units", len(runs), display=False)
display(pd.Series(results.cpu_seconds, name="CPU seconds").round().astype(int).to_frame())

# %% [markdown]
# ## The paper's claims, decided
#
# Each claim's effect with its 95 % interval, from the paired units above (see the chapter
# page for the design of each test).

# %%
display(claims.claims_html(results.claims))
claims.glue_claims(results.claims)
vp_pairs = results.pairs.query("compression == 'sparse' and method == 'ilm'")
by_target = hidden_cost.budget_gap_changes(cfg, vp_pairs).groupby("target").change.mean()
glue("gap_change_targets", len(by_target), display=False)
glue("gap_change_negative", int((by_target < 0).sum()), display=False)

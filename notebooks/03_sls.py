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
# # 03 · SLS: layer-wise truncation of a PETL-transferred ViT
#
# Han and Tang (ECCV 2024) transfer a pretrained ViT with small adapters, then ask how deep the
# model needs to be for each target: the CLS features of every block are mapped to 2-D with
# t-SNE and scored by their silhouette with the class labels, and every block above the
# shallowest one still scoring at least α·SC_last is cut. Here: the ImageNet DeiT-Tiny, real
# and synthetic targets, Convpass and a plain adapter, and DepGraph width pruning that removes
# as many parameters.

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | paper (set by the runner)
run = "main"  # name of the config file (set by the runner)
seed = 0  # draws the test images and generates the synthetic sets
model = "deit_tiny"  # an upstream ViT (notebook 00)
resolution = 96  # input side (px); notebook 00 must measure the same
targets = ["cifar10", "fashion_mnist", "mnist", "digits", "near", "middle", "far"]
natural_targets = ["cifar10"]  # in-domain for ImageNet (claim 3)
synthetic_per_class = 100  # images generated per class and split (near, middle, far)
train_per_class = 50  # per PETL seed: PETL training, t-SNE, probes, head re-fits and retraining
test_per_class = {"cifar10": 100, "fashion_mnist": 100, "mnist": -1, "digits": -1,
                  "near": 100, "middle": 100, "far": 100}  # -1: the whole test split
petl_methods = ["convpass", "adapter"]  # the first is compared with DepGraph
petl_seeds = {"convpass": [0], "adapter": [0]}  # each: training draw, init, order, Taylor batches
petl_scale = 1.0  # adapter scale s
petl_epochs = 6  # 4 left CIFAR-10's last-block silhouette negative on one training draw
petl_warmup_epochs = 1.0
petl_lr = 0.003  # AdamW, warm-up then cosine
petl_weight_decay = 0.0001
batch_size = 32
alpha = 0.3  # the threshold is alpha times the last block's silhouette
alphas = [0.3]  # kept depths evaluated (the alpha ablation sweeps them)
tsne_seeds = [0]  # the first is SLS's; others for the sensitivity ablation
perplexities = [30.0]  # the first is SLS's (sklearn's default)
tsne_iter = 500  # openTSNE iterations, the first 250 exaggerated
map_layers = [3, 6, 9, 12]  # blocks whose t-SNE maps are drawn
depgraph = True  # the DepGraph width-pruning baseline
taylor_batches = 10  # batches for the Taylor importance
taylor_batch_size = 32
retrain_epochs = 6  # after the cut: adapters and head trained again (paper: 100 epochs); 0: head re-fit only
retrain_lr = 0.0003  # AdamW, constant (the paper's FT retraining, lr 1e-5)
throughput_batches = [1, 64]
timing_forwards = [20, 5]  # timing rounds at each throughput batch: one forward of each model per round
loss_margin = 2.0  # accuracy points: "truncation loses little" (claim 2, non-inferiority)
depth_margin = 1.0  # blocks: "the kept depth does not depend on the t-SNE seed" (claim 5)
claims = ["premise", "depth", "truncation", "natural", "depgraph"]  # claim groups this run tests
workers = 2  # processes that train adapters, run t-SNE and DepGraph side by side, one thread each; 0: in this process

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from IPython.display import display
from myst_nb import glue

from compstudy import claims as claims_engine
from compstudy import plots, scale
from compstudy.studies import sls as study

cfg = study.Config.resolve(globals())
plots.set_style()
display(cfg.as_table())
results = study.run(cfg)
scale.record_scale(
    cfg, models=[cfg.model], resolution=cfg.resolution, targets=cfg.targets,
    budgets={"training images per class": cfg.train_per_class, "PETL epochs": cfg.petl_epochs,
             "t-SNE iterations": cfg.tsne_iter, "Taylor batches": cfg.taylor_batches,
             "retraining epochs": cfg.retrain_epochs,
             "alphas": sorted({cfg.alpha, *cfg.alphas})},
    seeds={"PETL": cfg.petl_seeds, "t-SNE": cfg.tsne_seeds}, test_images_per_target=results.test_images)
first = cfg.petl_methods[0]
claims_engine.glue_values({
    "alpha": cfg.alpha, "train_per_class": cfg.train_per_class, "petl_epochs": cfg.petl_epochs,
    "tsne_iter": cfg.tsne_iter, "taylor_batches": cfg.taylor_batches, "resolution": cfg.resolution,
    "loss_margin": cfg.loss_margin, "perplexity": cfg.perplexities[0],
    "retrain_epochs": cfg.retrain_epochs, "retrain_lr": cfg.retrain_lr,
    "tsne_seed": cfg.tsne_seeds[0], "taylor_batch_size": cfg.taylor_batch_size,
    "throughput_batches": claims_engine.and_join(cfg.throughput_batches),
    "targets": claims_engine.and_join(cfg.targets)})

# %% [markdown]
# ## Silhouette versus depth
#
# The silhouette of each block's t-SNE map (training images), mean over the PETL seeds, with
# the kept depth at α (dotted). The table gives each target's kept depth and last block's
# silhouette, and the last block's silhouette on the frozen backbone (before PETL).

# %%
fig = study.silhouette_figure(results, cfg)
plots.publish(fig, cfg.figures_dir / "silhouette_vs_depth.png", "silhouette_figure")

last = results.depths.query("alpha == @cfg.alpha and tsne_seed == @cfg.tsne_seeds[0] "
                            "and perplexity == @cfg.perplexities[0]")
kept_table = study.kept_table(cfg, results)
display(kept_table)
glue("kept_table", kept_table, display=False)
full_depth = study.model_depth(cfg.model)
glue("min_last_silhouette", float(last.last_silhouette.min()), display=False)
glue("targets_truncated", int((last.query("method == @first").groupby("target").depth.max() < full_depth).sum()),
     display=False)
glue("targets_count", len(cfg.targets), display=False)
glue("top_quarter", full_depth // 4, display=False)
glue("linear_top_share", 100 * study.linear_top_share(cfg), display=False)  # per cent
glue("natural_top_share_clause", study.natural_top_share_text(cfg, results.layers), display=False)

# %% [markdown]
# ## t-SNE maps of a few blocks
#
# First method, first PETL seed; coloured by class. Titles: the block's silhouette, and whether
# SLS keeps it.

# %%
fig = study.tsne_maps_figure(results, cfg)
plots.publish(fig, cfg.figures_dir / "tsne_maps.png", "tsne_figure")

# %% [markdown]
# ## Premise: does the silhouette follow linear separability?
#
# Per block: the silhouette against a linear probe's test accuracy on the same block's CLS
# features, with Spearman's ρ over the blocks (first method, mean over PETL seeds).

# %%
fig = study.premise_figure(results, cfg)
plots.publish(fig, cfg.figures_dir / "premise.png", "premise_figure")

# %% [markdown]
# ## Accuracy: full PETL, SLS and DepGraph
#
# Test accuracy at α, mean over the PETL seeds; both pruned models have their head re-fitted on
# their own features of the training images, then adapters and head retrained. Differences
# are paired over the test images, with a 95 % bootstrap interval over those images (it covers
# the test sample, not the training seed).

# %%
measured = study.summary_table(cfg, results.models, results.depths)
summary = study.rounded(measured)
display(summary[study.ACCURACY_COLUMNS])
glue("summary_table", summary[study.ACCURACY_COLUMNS], display=False)
glue("retraining", study.retraining_text(study.retrain_gains(cfg, measured)), display=False)
comparisons = results.comparisons
fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(comparisons) + 1))
labels = [f"{r.comparison} · {r.target} · {r.method}" for r in comparisons.itertuples()]
y = np.arange(len(comparisons))
ax.errorbar(comparisons.effect_pp, y, xerr=[comparisons.effect_pp - comparisons.ci_low_pp,
                                            comparisons.ci_high_pp - comparisons.effect_pp],
            fmt="o", capsize=3)
ax.axvline(0, color="grey", lw=0.8)
ax.set_yticks(y, labels, fontsize=8)
ax.invert_yaxis()
ax.set_xlabel("accuracy difference (points, 95 % CI over test images)")
plots.publish(fig, cfg.figures_dir / "accuracy_differences.png", "differences_figure")
display(comparisons.round(2))
glue("comparisons_table", comparisons.set_index(["comparison", "target", "method"]).round(2), display=False)

# %% [markdown]
# ## Kept depth against the target's distance from ImageNet
#
# Distance: one minus the spread of the ImageNet classifier's top-1 labels over the target's
# test images, as notebook 00 measured it for this model and resolution. Each point is
# annotated with SLS's accuracy change against the full model (points).

# %%
fig = study.depth_distance_figure(results, cfg)
plots.publish(fig, cfg.figures_dir / "depth_vs_distance.png", "distance_figure")
claims_engine.glue_values({"nearest_target": results.distances.reindex(cfg.targets).idxmin()})

# %% [markdown]
# ## Speed and storage
#
# Throughput on the run's CPU threads at each batch size (each model's median time over
# rounds in which the same target's models take turns, one forward each), and what each task stores: the
# adapters of the kept blocks and the head (plus one integer) for SLS, the whole pruned
# backbone for DepGraph.

# %%
speed = summary[study.speed_columns(cfg)]
display(speed)
glue("speed_table", speed, display=False)

# %% [markdown]
# ## Sensitivity to α and to t-SNE
#
# Shown when the run sweeps α, t-SNE seeds or perplexities (the ablation runs).

# %%
sweep = results.depths.assign(setting=lambda f: "seed " + f.tsne_seed.astype(str) + ", perplexity "
                              + f.perplexity.astype(str))
if len(cfg.alphas) > 1:
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    first_setting = sweep.query("tsne_seed == @cfg.tsne_seeds[0] and perplexity == @cfg.perplexities[0]")
    sns.lineplot(data=first_setting, x="alpha", y="depth", hue="target", style="method", marker="o",
                 errorbar=None, hue_order=cfg.targets, ax=ax)
    ax.set(ylabel="kept depth", title="kept depth against α")
    plots.publish(fig, cfg.figures_dir / "alpha.png")
if len(study.tsne_settings(cfg)) > 1:
    display(sweep.query("alpha == @cfg.alpha").pivot_table(index=["target", "method", "petl_seed"],
                                                           columns="setting", values="depth"))

# %% [markdown]
# ## Claims
#
# Each claim through the claims engine: effect, 95 % CI, verdict. Units are targets (each
# counted once through its mean over PETL seeds) unless the claim says otherwise.

# %%
display(claims_engine.claims_html(results.claims))
claims_engine.glue_claims(results.claims, units={"2.accuracy": "points", "3": "blocks", "4.accuracy": "points"})

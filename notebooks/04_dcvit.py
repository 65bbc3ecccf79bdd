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
# # 04 · DC-ViT: dense few-shot ViT compression against whole-block dropping
#
# DC-ViT (Zhang et al., CVPR 2024) compresses a vision transformer with a few unlabeled
# images. Instead of dropping whole blocks, as PRACTISE does, it removes the **attention** of
# chosen blocks and keeps **part of their MLP**, so any MACs budget can be met. The model
# compressed here is DeiT-Tiny with its ImageNet weights, fine-tuned on CIFAR-10 (ImageNet
# images are not available offline). The run goes through the four stages: (A) budget →
# structure, (B) a synthetic metric set by model inversion, (C) block-wise trials ranked by
# KL divergence on that set, (D) progressive compression in rank order; and through a
# PRACTISE-style block-dropping baseline with the same feature-mimicking fine-tune.

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | paper (set by the runner)
run = "main"  # name of the config file (set by the runner)
seed = 0  # data splits and the dense fine-tune
seeds = [0, 1, 2]  # few-shot sample, inversion, kept MLP units, fine-tuning order
model = "deit_tiny"  # the upstream ViT (ImageNet weights)
resolution = 64  # input side (px), chosen from notebook 00's cost table
dataset = "cifar10"
finetune_per_class = 1000  # training images per class for the dense fine-tune
test_per_class = 200  # test images per class for accuracy
heldout_per_class = 30  # disjoint test images per class: the real metric set of the ranking check
dense_epochs = 2
dense_batch_size = 64
dense_lr = 0.0005  # AdamW, linear warm-up then cosine
dense_weight_decay = 0.05
dense_warmup_epochs = 0.2
dense_label_smoothing = 0.1
dense_crop_pad = 0  # random crops after zero padding by this many pixels (0: horizontal flips only)
num_samples = [50, 500]  # few-shot sizes N (images of the few-shot pool, labels unused)
keep_ratios = [0.9322, 0.8643, 0.7964, 0.7286, 0.6607, 0.5928]  # MACs budgets (fraction kept)
n_blocks = None  # force the number of compressed blocks (paper --rm-num); None: stage A decides
min_block = 1  # candidate blocks min_block..max_block (0-indexed; paper: 1..10 of 12)
max_block = 10
trial_drop_ratio = 0.75  # rd of the compressed block in the stage-C trials
rank_metric = "synthetic"  # rank blocks by KL on the synthetic set (paper) or on the real held-out set
trial_steps = 10  # feature-mimicking steps per block trial (paper: 2000)
finetune_steps = 30  # steps after each progressive compression and after dropping (paper: 2000)
batch_size = 16
lr = 0.0005  # AdamW (paper 3e-5 over 2000 steps; our runs are ~100x shorter)
weight_decay = 0.0001
update_settings = ["before"]  # before: embeddings, blocks up to b+1 and final norm train, all: every block
mlp_inits = ["random"]  # random | activation (which MLP units a compressed block keeps)
run_block_drop = True
drop_blocks = [1, 2, 3]  # block-dropping baseline: how many whole blocks to drop
adaptor_steps = 8  # PRACTISE recoverability: adaptor-only training steps per block
adaptor_lr = 0.02
recover_images = 100  # few-shot images the recoverability MSE is measured on (None: all N)
inv_images = 20  # synthetic metric set: images, spread over random classes
inv_steps = 100  # paper: 2000
inv_lr = 0.25
inv_tv = 0.0001
inv_l2 = 0.00001
inv_beta = 0.6
inv_jitter = 8  # pixels (paper: 30 of 224); None: the paper's fraction of the side
latency_batch = 64
latency_forwards = 25  # timing rounds: one forward of every structure in turn per round; see configs/cpu
latency_probe_blocks = [2, 4, 6, 8, 10]  # attention-only / MLP-only removal in the first k candidate blocks
claims = ["1", "2", "3", "5", "6"]  # the claims of the paper's section 4 this run decides
workers = 2  # processes that compress few-shot sets side by side, one thread each; 0: in this process

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from IPython.display import display
from myst_nb import glue

from compstudy import claims as claims_engine
from compstudy import plots, scale
from compstudy.methods import inversion
from compstudy.seeding import seed_everything
from compstudy.studies import dcvit as study

cfg = study.Config.resolve(globals())
seed_everything(cfg.seed)
plots.set_style()
display(cfg.as_table())
results = study.run(cfg)
points = 100  # accuracies are shown in percentage points
claims_engine.glue_values({
    "num_samples": claims_engine.and_join(cfg.num_samples), "n_seeds": len(cfg.seeds),
    "n_budgets": len(cfg.keep_ratios), "trial_keep_pct": points * (1 - cfg.trial_drop_ratio),
    "min_block": cfg.min_block, "max_block": cfg.max_block,
    "n_candidates": cfg.max_block - cfg.min_block + 1, "trial_steps": cfg.trial_steps,
    "finetune_steps": cfg.finetune_steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
    "inv_images": cfg.inv_images, "inv_steps": cfg.inv_steps,
    "inv_jitter": inversion.default_jitter(cfg.resolution, cfg.inv_jitter),
    "drop_blocks": claims_engine.and_join(cfg.drop_blocks), "adaptor_steps": cfg.adaptor_steps,
    "recover_images": "all" if cfg.recover_images is None else str(cfg.recover_images),
    "latency_batch": cfg.latency_batch, "latency_forwards": cfg.latency_forwards,
    "latency_probe_blocks": claims_engine.and_join(cfg.latency_probe_blocks)})
scale.record_scale(cfg, models=[cfg.model], resolution=cfg.resolution, targets=[cfg.dataset],
                   budgets={"MACs kept": cfg.keep_ratios, "few-shot images N": cfg.num_samples,
                            "whole blocks dropped": cfg.drop_blocks if cfg.run_block_drop else [],
                            "mimicking steps per compression": cfg.finetune_steps,
                            "trial steps": cfg.trial_steps, "inversion steps": cfg.inv_steps},
                   seeds=cfg.seeds, test_images_per_target={cfg.dataset: int(results.dense.test_images.iloc[0])})

# %% [markdown]
# ## The model to compress
#
# DeiT-Tiny from its ImageNet weights, its head replaced by a CIFAR-10 one, fine-tuned on
# the fine-tuning images. Every few-shot set is drawn from the rest of the training split;
# accuracy is measured on test images, and a disjoint part of the test split serves as the
# real held-out set of the ranking check. The four sets share no image.

# %% tags=["hide-input"]
display(results.splits)
display(results.dense.round(4).T.rename(columns=lambda _: "value"))  # one model: a column reads better than a wide row
dense = results.dense.iloc[0]
glue("dense_accuracy", float(points * dense.accuracy), display=False)
glue("dense_test_images", int(dense.test_images), display=False)
glue("dense_finetune_images", int(dense.finetune_images), display=False)
glue("dense_epochs", int(dense.epochs), display=False)
glue("heldout_images", int(dense.heldout_images), display=False)
glue("resolution", int(cfg.resolution), display=False)
glue("dense_cpu_seconds", float(dense.cpu_seconds), display=False)
glue("splits_table", results.splits, display=False)

# %% [markdown]
# ## Stage A: from a MACs budget to a structure
#
# n = ⌈R/(A+P)⌉ blocks lose their attention and all share a dropped MLP fraction
# rd = (R/n − A)/P; the kept hidden units are rounded down so the budget always holds.
# First the paper's worked example (ViT-B/16, keep ratio 0.7517) with both MACs counts,
# then this run's budgets on the fine-tuned model.

# %% tags=["hide-input"]
costs = results.costs.as_dict()
display(results.example.round(4))
display({k: (round(v, 4) if isinstance(v, float) else v) for k, v in costs.items()})
display(results.structures.round(4))
glue("attention_share", float(points * costs["attention_share_of_block"]), display=False)
glue("block_share", float(points * costs["block_share_of_total"]), display=False)
glue("tokens", int(costs["tokens"]), display=False)
glue("structures_table", results.structures.round(4), display=False)

# %% [markdown]
# ## Stage B: a synthetic metric set by model inversion
#
# Gaussian noise optimised so that the frozen fine-tuned model predicts chosen classes
# (cross-entropy, total variation with exponent β, an L2 prior, jitter and flips), once per
# seed and shared by every few-shot size and ablation.

# %% tags=["hide-input"]
display(results.inversion.round(4))
inverted = results.inverted
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1.5, 1]})
shown = (inverted["images"] * 255).round().byte()
plots.image_grid(shown, inverted["targets"], results.classes, n_per_class=4,
                 classes=sorted(set(inverted["targets"].tolist()))[:5],
                 title=f"inverted images (seed {cfg.seeds[0]})", ax=axes[0])
axes[1].plot(inverted["history"]["step"], inverted["history"]["loss"], label="total loss")
axes[1].plot(inverted["history"]["step"], inverted["history"]["ce"], label="cross-entropy", alpha=0.8)
axes[1].set(xlabel="step", ylabel="loss", yscale="log", title="inversion")
axes[1].legend()
plots.publish(fig, cfg.figures_dir / "inversion.png", "inversion_figure")
glue("inversion_hit_rate", float(points * results.inversion.hit_rate.mean()), display=False)

# %% [markdown]
# ## Stage C: block-wise trials and the ranking check
#
# Each candidate block alone loses its attention and keeps a random quarter of its MLP;
# the model is tuned by feature mimicking on the N images and scored by the KL divergence to
# the original on the synthetic set. The same trial models are also scored on the real
# held-out images: if the synthetic set ranks blocks like real data does, the two KLs agree.

# %% tags=["hide-input"]
rankings = results.rankings
display(rankings.round(3))
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
sns.scatterplot(data=results.trials, x="kl_real", y="kl_synthetic", hue="num_samples", style="seed",
                palette="colorblind", ax=axes[0])
axes[0].set(xscale="log", yscale="log", xlabel="KL on real held-out images",
            ylabel="KL on synthetic images", title="one point per block trial")
sns.stripplot(data=rankings, x="num_samples", y="rho", hue="seed", palette="colorblind", size=8, ax=axes[1])
axes[1].axhline(0, color="grey", lw=0.8)
axes[1].set(xlabel="few-shot images N", ylabel="Spearman ρ (synthetic vs real)", ylim=(-1, 1),
            title="ranking check, one point per (N, seed)")
plots.publish(fig, cfg.figures_dir / "ranking_check.png", "ranking_figure")
glue("rho_mean", float(rankings.rho.mean()), display=False)
glue("top3_overlap_mean", float(rankings.top3_overlap.mean()), display=False)
glue("rankings_table", rankings.round(3), display=False)

# %% [markdown]
# ## Stage D and the baseline: accuracy against MACs
#
# One progressive chain per (N, seed) compresses the ranked blocks one at a time, with a
# feature-mimicking fine-tune after each; its k-th model meets the k-th budget. Block
# dropping scores every block by how well identity-initialised linear adaptors recover the
# features once it is gone, drops the k best-scored blocks and gets the same fine-tune.

# %% tags=["hide-input"]
chains = study.main_chains(results.chains).dropna(subset=["keep_ratio"])
display(results.accuracy.round(2))
n_list = list(cfg.num_samples)
fig, axes = plt.subplots(1, len(n_list), figsize=(5.2 * len(n_list), 3.9), sharey=True, squeeze=False)
for ax, n in zip(axes[0], n_list):
    mine = chains[chains.num_samples == n]
    by_k = mine.groupby("k").agg(macs=("macs_kept", "mean"), acc=("accuracy", "mean"), sd=("accuracy", "std"))
    ax.errorbar(np.r_[1.0, by_k.macs], points * np.r_[dense.accuracy, by_k.acc],
                yerr=points * np.r_[0, by_k.sd.fillna(0)], marker="o", capsize=3, label="DC-ViT")
    drop = results.drops[results.drops.num_samples == n] if len(results.drops) else results.drops
    if len(drop):
        by_d = drop.groupby("k").agg(macs=("macs_kept", "mean"), acc=("accuracy", "mean"), sd=("accuracy", "std"))
        ax.errorbar(by_d.macs, points * by_d.acc, yerr=points * by_d.sd.fillna(0), marker="s", ls="none",
                    ms=8, capsize=3, color="black", label="block drop (PRACTISE-style)")
    ax.axhline(points * dense.accuracy, color="grey", ls="--", lw=1, label="dense model")
    ax.set(title=f"N = {n} images", xlabel="MACs kept (fraction)", ylabel="test accuracy (%)")
axes[0][0].legend(fontsize=8)
fig.suptitle(f"mean ± sd over {len(cfg.seeds)} seeds, {int(dense.test_images)} test images", y=1.02)
plots.publish(fig, cfg.figures_dir / "accuracy_vs_macs.png", "accuracy_figure")
glue("accuracy_table", results.accuracy.round(2), display=False)

# %% [markdown]
# ## At equal MACs
#
# Each (N, seed) DC-ViT curve, with the dense model at all MACs, interpolated at the MACs of
# that (N, seed)'s block-dropping models: the paired difference that decides claim 1.
# Below it, where each method removes computation: the mean index (0 to 11) of the first
# blocks DC-ViT compresses and of the blocks block dropping removes, per (N, seed).

# %% tags=["hide-input"]
equal = results.equal_macs
if len(equal):
    equal_summary = equal.groupby(["num_samples", "k"])[["macs_kept", "block_drop", "dcvit", "difference"]] \
        .agg(["mean", "std"])
    display(equal_summary.round(4))
    fig, ax = plt.subplots(figsize=(6.2, 3.8))
    sns.stripplot(data=equal.assign(diff=points * equal.difference), x="k", y="diff", hue="num_samples",
                  dodge=True, size=7, palette="colorblind", ax=ax)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="whole blocks dropped (the MACs level compared)",
           ylabel="DC-ViT − block drop (points)", title="equal-MACs differences, one point per seed")
    plots.publish(fig, cfg.figures_dir / "equal_macs.png", "equal_macs_figure")
    glue("equal_macs_table", equal_summary.round(4), display=False)
    interval = claims_engine.mean_interval(points * equal.difference.dropna())
    glue("equal_effect", float(interval.effect), display=False)
    glue("equal_ci_low", float(interval.ci_low), display=False)
    glue("equal_ci_high", float(interval.ci_high), display=False)
    by_k = points * equal.groupby("k").difference.mean()
    glue("equal_fewest_blocks", float(by_k.iloc[0]), display=False)
    glue("equal_most_blocks", float(by_k.iloc[-1]), display=False)
    deepest = equal[equal.k == equal.k.max()]
    glue("drop_loss_at_smallest", float(points * (dense.accuracy - deepest.block_drop).mean()), display=False)
    glue("dcvit_loss_at_smallest", float(points * (dense.accuracy - deepest.dcvit).mean()), display=False)
    glue("worst_loss_at_smallest", float(points * (dense.accuracy - deepest[["block_drop", "dcvit"]].min(axis=1)).max()),
         display=False)
    place = results.placement
    display(place.round(2))
    glue("placement_blocks", int(place.blocks.iloc[0]), display=False)
    glue("dcvit_mean_block", float(place.dcvit.mean()), display=False)
    glue("drop_mean_block", float(place.block_drop.mean()), display=False)

# %% [markdown]
# ## Dense coverage and latency
#
# For a grid of budgets, the MACs each method gives up beyond the budget to meet it; then
# batch latency of every structure on the CPU, with two probes that remove only the attention
# or only the MLP of k blocks.

# %% tags=["hide-input"]
display(results.coverage.describe().loc[["mean", "max"]].round(4))
latency = results.latency
if len(latency):
    display(latency[["method", "k", "macs_kept", "median_ms", "iqr_ms", "latency_kept", "gain_per_macs",
                     "gain_per_macs_low", "gain_per_macs_high"]].round(3))
    fig, ax = plt.subplots(figsize=(5.8, 4))
    sns.scatterplot(data=latency[latency.method != "full"], x="macs_kept", y="latency_kept", hue="method",
                    style="method", s=70, ax=ax)
    ax.plot([0.5, 1], [0.5, 1], color="grey", ls="--", lw=1, label="proportional")
    ax.set(xlabel="MACs kept (fraction)", ylabel=f"batch-{cfg.latency_batch} latency kept (fraction)",
           title="CPU latency, 2 threads")
    ax.legend(fontsize=8)
    plots.publish(fig, cfg.figures_dir / "latency_vs_macs.png", "latency_figure")

# %% [markdown]
# ## Ablation: which blocks train after each compression
#
# Present when the run compares the paper's `before` setting (embeddings, blocks up to the
# compressed one plus one, final norm) with updating every block; both compress the blocks
# in the same order.

# %% tags=["hide-input"]
pairs = results.update_pairs
if len(pairs):
    display(pairs.round(4))
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    sns.stripplot(data=pairs.assign(diff=points * pairs.difference), x="k", y="diff", hue="num_samples",
                  size=7, palette="colorblind", ax=ax)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="blocks compressed", ylabel="before − all (points)", title="update setting, one point per seed")
    plots.publish(fig, cfg.figures_dir / "update_setting.png", "update_figure")

# %% [markdown]
# ## The claims of the paper's section 4, decided

# %% tags=["hide-input"]
display(claims_engine.claims_html(results.claims))
claims_engine.glue_claims(results.claims)
display(results.cpu.round(1))

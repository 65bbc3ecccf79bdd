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
# # 00 · What every chapter starts from
#
# Two networks pretrained on ImageNet-1k: **EfficientNet-Lite0**, a compact CNN that stands in
# for the papers' ResNets, and **DeiT-Tiny**, the smallest vision transformer DC-ViT
# compresses. Their targets: real images (CIFAR-10, Fashion-MNIST, MNIST, scikit-learn's
# digits) and synthetic sets built at a controlled distance (`near`, `middle`, `far`). This
# notebook checks the weights, shows every target, and measures at each candidate input
# resolution what a chapter needs to choose its own: cost, throughput, and how much better the
# ImageNet features transfer than the same network at random initialisation.

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | paper (set by the runner)
run = "main"  # name of the config file (set by the runner)
seed = 0
upstream_models = ["efficientnet_lite0", "deit_tiny"]
resolutions = {"efficientnet_lite0": [48, 64], "deit_tiny": [64, 96, 128, 160]}  # candidate input sides (px)
targets = ["cifar10", "fashion_mnist", "mnist", "digits", "near", "middle", "far"]
synthetic_per_class = 100  # images generated per class and split for the synthetic targets
probe_train_per_class = 30  # training images per class of each linear probe
probe_test_per_class = 30  # test images per class of each linear probe
throughput_batch = 64
throughput_seconds = 0.5  # timing per measurement (torch.utils.benchmark, 2 threads)

# %%
import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import display
from myst_nb import glue

from compstudy import claims, plots, scale
from compstudy.seeding import seed_everything
from compstudy.studies import upstream

cfg = upstream.Config.resolve(globals())
seed_everything(cfg.seed)
plots.set_style()
display(cfg.as_table())
results = upstream.run(cfg)
scale.record_scale(cfg, models=cfg.upstream_models, resolution=cfg.resolutions, targets=cfg.targets,
                   budgets={"probe training images per class": cfg.probe_train_per_class},
                   seeds=[cfg.seed],
                   test_images_per_target=results.probes.groupby("target").test_images.max().to_dict())

# %% [markdown]
# ## The weights really are ImageNet weights
#
# Each model classifies the 16 ImageNet stub images at 224 px with timm's evaluation
# transform. The DeiT-Tiny weights come from a per-tensor export whose LayerNorm parameters
# were rounded to 8-bit fixed point; the malamute it calls a husky is the known miss.

# %%
stubs = results.stubs.pivot_table(index="image", columns="model", values=["prediction", "correct"],
                                  aggfunc="first").swaplevel(axis=1).sort_index(axis=1)
stubs.insert(0, ("truth", ""), results.stubs.groupby("image").truth.first())
display(stubs)
claims.glue_values(results.stubs.groupby("model").correct.sum(), prefix="stubs_correct_")

# %% [markdown]
# ## The targets
#
# Eight images of each class of every target, at native size (the models' preprocessing
# resizes them). CIFAR-10 here is a JPEG copy at quality 75, so accuracies on it are not
# comparable with published CIFAR-10 numbers.

# %%
fig, axes = plt.subplots(1, len(results.targets), figsize=(2.6 * len(results.targets), 4.2))
for ax, (name, (train_set, _)) in zip(axes, results.targets.items()):
    plots.image_grid(train_set.images, train_set.labels, train_set.classes, n_per_class=4,
                     title=name, ax=ax)
plots.publish(fig, cfg.figures_dir / "targets.png", "targets_figure")

# %% [markdown]
# ## Cost and throughput at each resolution
#
# MACs per image are counted by Torch-Pruning's counter; throughput is measured with
# `torch.utils.benchmark` on two threads, forward at batch {glue:text}`throughput_batch` and SGD
# steps (forward, backward, update) at the same batch. This table is where each chapter
# picks its input resolution.

# %%
costs = results.costs.assign(gmacs=lambda f: f.macs / 1e9).round(
    {"gmacs": 3, "forward_img_s": 0, "train_img_s": 0})
display(costs.set_index(["model", "resolution"])[["parameters", "gmacs", "forward_img_s", "train_img_s"]])
glue("throughput_batch", cfg.throughput_batch, display=False)
glue("costs_table", costs.set_index(["model", "resolution"]), display=False)
fig, ax = plt.subplots(figsize=(5.5, 3.2))
sns.lineplot(data=results.costs, x="resolution", y="train_img_s", hue="model", marker="o", ax=ax)
ax.set(yscale="log", xlabel="input side (px)", ylabel="training images / s (2 threads)")
plots.publish(fig, cfg.figures_dir / "throughput.png")

# %% [markdown]
# ## ImageNet features against random initialisation
#
# A logistic-regression probe on frozen pre-logit features (standardised), trained on
# {glue:text}`probe_train_per_class` images per class and tested on up to
# {glue:text}`probe_test_per_class` per class of every target, for the ImageNet weights and for
# the same network at timm's random initialisation. The gap is what pretraining buys a
# chapter at that resolution.

# %%
gains = upstream.probe_gains(results.probes)
glue("probe_train_per_class", cfg.probe_train_per_class, display=False)
glue("probe_test_per_class", cfg.probe_test_per_class, display=False)
grid = sns.catplot(data=results.probes, x="resolution", y="probe_accuracy", hue="init",
                   col="target", row="model", kind="point", height=2.0, aspect=0.9,
                   col_order=cfg.targets, sharex=False, margin_titles=True)
grid.set_titles(row_template="{row_name}", col_template="{col_name}")
plots.publish(grid.figure, cfg.figures_dir / "probes.png", "probes_figure")
table = gains.pivot_table(index=["model", "resolution"], columns="target",
                          values=["imagenet", "random"]).round(3)
display(table)
gain_table = upstream.gain_table(gains, results.costs, cfg.targets)
gain_table = gain_table.rename(columns=lambda name: name.replace("_", " "))  # "fashion mnist" may wrap
display(gain_table)
glue("gain_table", gain_table, display=False)
plots.publish(upstream.gain_figure(gains, cfg.targets), cfg.figures_dir / "gains.png", "gain_figure")

# %% [markdown]
# ## How far is each target from ImageNet?
#
# Measured, not asserted: the normalised entropy of the ImageNet classifier's predictions on
# each target's test images (0: it is sure the image shows one ImageNet class; 1: it has no
# idea). Targets the classifier cannot place are the ones layer-wise pruning expects to need
# fewer of its layers.

# %%
distance = upstream.distances(results.probes)
display(distance.round(3))
fig, ax = plt.subplots(figsize=(6, 3.2))
long = distance.stack(["model", "resolution"], future_stack=True).rename("entropy").reset_index()
sns.barplot(data=long, x="target", y="entropy", hue="model", order=cfg.targets, ax=ax, errorbar=None)
ax.set(ylabel="ImageNet prediction entropy", xlabel="", ylim=(0, 1))
plots.publish(fig, cfg.figures_dir / "distances.png")

# %% [markdown]
# ## Where the files come from
#
# Every external file is listed once in `compstudy.assets`, with its canonical source, licence
# and digest; it is read from the cache, the offline mirror or a verified download.

# %%
display(upstream.asset_table())

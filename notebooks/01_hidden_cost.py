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
# Misra et al. transfer dense and sparse ImageNet ResNets to downstream tasks with visual
# prompting (VP: a learned border around the input plus a label mapping, model frozen) and
# with linear probing (LP), and report that sparsity costs VP accuracy (most with little
# data) and calibration. Here the source is the zoo's ResNet-18 trained on the synthetic
# 100-class `source` task; its sparse versions are made on the same task by five methods,
# and every model is transferred to the offline targets with RLM / FLM / ILM VP and LP at
# several few-shot budgets. Sparsity = zeros / total over **all Conv2d weights** (FC,
# biases and BatchNorm excluded and never pruned).

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | paper (set by the runner)
run = "main"  # name of the config file (set by the runner)
seed = 0  # seed of the sparse models (source data draw, batch order)
source_model = "resnet18"
sparse_source_per_class = 20  # source train images per class used to make the sparse models
source_test_per_class = 10  # source test images per class for the source accuracy
sparse_families = {"lottery": [0.5, 0.8, 0.9], "oneshot": [0.5, 0.8, 0.9], "gmp": [0.5, 0.8, 0.9],
                   "acdc": [0.5, 0.8, 0.9], "rigl": [0.5, 0.8, 0.9]}
sparse_recipe = {"steps": 60, "lr": 0.02, "batch_size": 64, "lottery_round_steps": 15, "lottery_rewind_step": 5}
heatmap_family = "lottery"  # the family swept over sparsity (heat-map)
target_datasets = ["near", "middle", "far", "digits"]
target_train_per_class = 8  # the "full" budget (digits is capped to it too)
target_test_per_class = 6
shots = [2, 4, -1]  # images per class (-1: full)
seeds = [0, 1, 2]  # transfer seeds: few-shot draw, RLM permutation, batch order
methods = ["ilm", "flm", "rlm", "lp"]  # every model is transferred with every method
# restrict the transferred models to these labels (empty: dense and every sparse model)
transfer_labels = []
canvases = [40]  # prompt canvas side(s) S; the 32x32 image sits in the middle
mapping_intervals = [1]  # ILM: epochs between mapping updates
vp_epochs = 2  # ILM remaps before each epoch: once more than FLM
vp_lr = 0.1  # paper: 0.01 over ~40k steps; we take 6 to 20 steps
vp_batch_size = 8
vp_precision = "bfloat16"  # of the frozen model's passes; "float32" is about 2x slower on this CPU
lp_epochs = 50
lp_lr = 0.01
ece_bins = 15
picture_dataset = "near"  # target whose learned prompts are pictured

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import display

from compstudy import data, metrics, plots, prompting, sparsity, train, zoo
from compstudy.errors import unknown_choice
from compstudy.results import RunStore
from compstudy.seeding import seed_everything
from compstudy.studies.hidden_cost import Config

cfg = Config.resolve(globals())
seed_everything(cfg.seed)
plots.set_style()
display(cfg.as_table())

# %% [markdown]
# Every choice a user can get wrong is checked here, before any training: families and
# sparsities, transfer methods, canvases, mapping intervals and shot budgets.

# %%
sparsity.validate_families(cfg.sparse_families)
prompting.validate_transfer(cfg.methods, cfg.shots, min(cfg.canvases),
                            min(cfg.mapping_intervals), cfg.vp_precision)
labels = ["dense"] + [sparsity.model_label(f, s) for f, ss in cfg.sparse_families.items() for s in ss]
for name in cfg.transfer_labels:
    if name not in labels:
        raise unknown_choice("model label", name, labels)
targets = {}
for name in cfg.target_datasets:
    train_full = data.load_dataset(name, "train", cfg.target_train_per_class, cfg.seed)
    test_full = data.load_dataset(name, "test", cfg.target_test_per_class, cfg.seed)
    prompting.check_shots(train_full, cfg.shots + [cfg.target_train_per_class])
    targets[name] = (data.few_shot(train_full, cfg.target_train_per_class, cfg.seed),
                     data.few_shot(test_full, min(cfg.target_test_per_class,
                                                  int(test_full.class_counts().min())), cfg.seed))
display(pd.DataFrame({n: {"train (full)": len(tr), "test": len(te)} for n, (tr, te) in targets.items()}).T)

# %% [markdown]
# ## Sparse source models
#
# Each family starts from the dense upstream ResNet-18 and trains on
# `sparse_source_per_class` source images per class (recipe above; checkpoints cached under
# `artifacts/sparse/`). Lottery tickets come from one IMP trajectory pruning 20 % of the
# survivors per round and rewinding to the weights after `lottery_rewind_step` steps.
# The source test accuracy of every model is measured beside the dense one.

# %%
dense, sparse = sparsity.sparse_models(cfg.source_model, cfg.profile, cfg.sparse_families,
                                       cfg.sparse_source_per_class, cfg.seed, cfg.sparse_recipe)
models_by_label = {"dense": dense} | {label: model for label, (model, _) in sparse.items()}
source_test = data.load_dataset(zoo.upstream_params(cfg.profile)["source_dataset"], "test",
                                cfg.source_test_per_class, cfg.seed)
store = RunStore(cfg.results_dir, key=prompting.SWEEP_KEY)
source_units = [{"kind": "source", "model": label, "target": "source", "method": "none", "shots": 0,
                 "seed": cfg.seed, "canvas": 0, "mapping_interval": 0} for label in models_by_label]
for unit in store.pending(source_units):
    model = models_by_label[unit["model"]]
    logits, _ = train.predict(model, data.make_loader(source_test, 256, shuffle=False))
    info = sparse[unit["model"]][1] if unit["model"] in sparse else {"family": "dense", "sparsity": 0.0}
    store.add(unit | {"accuracy": metrics.accuracy(logits, source_test.labels),
                      "family": info["family"], "sparsity": info["sparsity"],
                      "conv_sparsity": sparsity.conv_sparsity(model),
                      "nonzero_parameters": metrics.count_nonzero_parameters(model),
                      "train_seconds": info.get("train_seconds", 0.0)})
source_rows = store.frame.query("kind == 'source'")[
    ["model", "family", "sparsity", "conv_sparsity", "nonzero_parameters", "accuracy"]].set_index("model")
display(source_rows.rename(columns={"accuracy": "source_test_accuracy"}).round(4))

# %%
fig, ax = plt.subplots(figsize=(7, 3))
sns.barplot(data=source_rows.reset_index(), x="model", y="accuracy", hue="family", dodge=False, ax=ax)
ax.axhline(source_rows.loc["dense", "accuracy"], color="k", ls="--", lw=1, label="dense")
ax.set(ylabel="source test accuracy", xlabel="")
ax.tick_params(axis="x", rotation=30)
ax.legend(fontsize=8, ncols=3)
plots.save_figure(fig, cfg.figures_dir / "source_accuracy.png")
plt.show()

# %% [markdown]
# ## Transfer sweep
#
# One unit = (model, target, method, budget, seed[, canvas, mapping interval]); every unit
# is a row of `runs.csv`, so an interrupted run resumes where it stopped. The VP units of one
# model, target, budget and canvas (mappings × seeds) learn their prompts in shared forward
# passes of the frozen model, which gives each prompt the trajectory it would have alone
# (`prompting.train_prompts`) at a fraction of the CPU time. Accuracy is taken
# after the final epoch and ECE uses 15 equal-width bins over the softmax of the mapped
# target logits.

# %%
transferred = cfg.transfer_labels or list(models_by_label)
units = prompting.sweep_units(transferred, cfg.target_datasets, cfg.methods, cfg.shots, cfg.seeds,
                              cfg.canvases, cfg.mapping_intervals)
settings = prompting.TransferSettings(vp_epochs=cfg.vp_epochs, vp_lr=cfg.vp_lr,
                                      vp_batch_size=cfg.vp_batch_size, vp_precision=cfg.vp_precision,
                                      canvas=cfg.canvases[0],
                                      lp_epochs=cfg.lp_epochs, lp_lr=cfg.lp_lr)
print(f"{len(units)} transfer units, {len(list(store.pending(units)))} to compute")
prompting.run_sweep(store, units, models_by_label, targets, settings, cfg.results_dir, cfg.ece_bins)
runs = store.frame.query("kind == 'transfer'").copy()
runs["images_per_class"] = runs.shots.map(lambda s: prompting.shots_label(s, cfg.target_train_per_class))
runs["family"] = runs.model.str.split("-").str[0]
display(runs.pivot_table(index=["model"], columns=["method", "images_per_class"], values="accuracy").round(3))

# %% [markdown]
# ## Accuracy versus data budget, dense versus sparse
#
# One row per target, one column per transfer method; mean ± sd over seeds.

# %%
main_canvas, main_interval = cfg.canvases[0], cfg.mapping_intervals[0]
grid = sns.relplot(data=runs.query("canvas in [0, @main_canvas] and mapping_interval in [0, 1, @main_interval]"),
                   x="images_per_class", y="accuracy", hue="model", style="family", row="target",
                   col="method", col_order=[m for m in prompting.METHODS if m in set(runs.method)],
                   kind="line", markers=True, errorbar="sd", height=2.4, aspect=1.2,
                   facet_kws={"sharey": "row"})
budgets = sorted(runs.images_per_class.unique())
for ax in grid.axes.flat:
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
grid.set_titles("{row_name} · {col_name}")
plots.save_figure(grid.figure, cfg.figures_dir / "accuracy_vs_shots.png")
plt.show()

# %% [markdown]
# ## The dense − sparse gap over sparsity and budget
#
# Accuracy of the dense model minus that of the sparse one, paired by target and seed and
# averaged, for the family swept over sparsity; left VP (ILM), right LP.

# %%
decided = prompting.claims(runs)
pairs = decided["pairs"]
heat = pairs[pairs.model.str.startswith(cfg.heatmap_family)] if len(pairs) else pairs
if len(heat):
    heat = heat.assign(sparsity=heat.model.str.split("-").str[1].astype(float),
                       images_per_class=heat.shots.map(lambda s: prompting.shots_label(s, cfg.target_train_per_class)))
    panels = [m for m in ["ilm", "lp"] if m in set(heat.method)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3), squeeze=False)
    for ax, method in zip(axes[0], panels):
        table = heat[heat.method == method].pivot_table(index="sparsity", columns="images_per_class", values="gap")
        sns.heatmap(table * 100, annot=True, fmt=".1f", cmap="RdBu_r", center=0, ax=ax,
                    cbar_kws={"label": "dense − sparse (points)"})
        ax.set_title(f"{cfg.heatmap_family} · {method.upper()}")
    plots.save_figure(fig, cfg.figures_dir / "gap_heatmap.png")
    plt.show()
    display((decided["gap"] * 100).round(2))

# %% [markdown]
# The same gap for every family against sparsity (mean over targets, budgets and seeds,
# ± standard error), under ILM-VP and LP: does the gap grow with sparsity in every family?

# %%
if len(pairs):
    by_family = pairs[pairs.method.isin(["ilm", "lp"])].assign(
        family=lambda f: f.model.str.split("-").str[0],
        sparsity=lambda f: f.model.str.split("-").str[1].astype(float), gap_points=lambda f: 100 * f.gap)
    grid = sns.relplot(data=by_family, x="sparsity", y="gap_points", hue="family", col="method",
                       kind="line", marker="o", errorbar="se", height=3, aspect=1.2)
    for ax in grid.axes.flat:
        ax.axhline(0, color="k", lw=1)
    grid.set_axis_labels("conv sparsity", "dense − sparse (points)")
    plots.save_figure(grid.figure, cfg.figures_dir / "gap_vs_sparsity.png")
    plt.show()

# %% [markdown]
# ## Calibration
#
# ECE per model and method (mean over targets, budgets and seeds), reliability diagrams of
# the dense model and the sparsest model of the swept family (ILM, every unit pooled), and
# the probability given to the true class, split by right and wrong predictions.

# %%
fig, ax = plt.subplots(figsize=(8, 3))
sns.barplot(data=runs, x="model", y="ece", hue="method", ax=ax, errorbar="sd")
ax.tick_params(axis="x", rotation=30)
ax.set(xlabel="", ylabel=f"ECE ({cfg.ece_bins} bins)")
plots.save_figure(fig, cfg.figures_dir / "ece.png")
plt.show()
display(decided["ece"].round(4))

# %%
sparsest = [m for m in transferred if m.startswith(cfg.heatmap_family)]
compared = ["dense"] + sorted(sparsest, key=lambda m: float(m.split("-")[1]))[-1:]
method = "ilm" if "ilm" in cfg.methods else runs.method.iloc[0]
pooled = {}
for label in compared:
    chosen = runs[(runs.model == label) & (runs.method == method)]
    saved = [prompting.load_unit(cfg.results_dir, {k: r[k] for k in prompting.SWEEP_KEY})
             for r in chosen.to_dict("records")]
    pooled[label] = (torch.cat([s["probs"] for s in saved]), torch.cat([s["labels"] for s in saved]))
fig, axes = plt.subplots(1, len(pooled) + 1, figsize=(3.6 * (len(pooled) + 1), 3.2))
for ax, (label, (probs, labels_)) in zip(axes, pooled.items()):
    bins = metrics.reliability_bins(probs, labels_, cfg.ece_bins)
    ax.bar(bins.bin_lower, bins.accuracy.fillna(0), width=1 / cfg.ece_bins, align="edge",
           edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set(title=f"{label} · {method.upper()} · ECE {metrics.expected_calibration_error(probs, labels_, cfg.ece_bins):.3f}",
           xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
confidence = pd.concat([metrics.true_class_confidence(p, y).assign(model=label)
                        for label, (p, y) in pooled.items()])
sns.boxplot(data=confidence, x="correct", y="confidence_true", hue="model", ax=axes[-1])
axes[-1].set(title="p(true class)", xlabel="prediction correct")
plots.save_figure(fig, cfg.figures_dir / "reliability.png")
plt.show()

# %% [markdown]
# ## Learned prompts
#
# A few test images of one target with the ILM prompt learned on the full budget (seed of
# the first unit), for the dense model and the sparsest swept model.

# %%
picture_units = runs[(runs.target == cfg.picture_dataset) & (runs.method != "lp") &
                     (runs.model.isin(compared)) & (runs.shots == cfg.shots[-1])]
picture_units = picture_units.sort_values(["model", "method", "seed", "canvas"]).drop_duplicates(["model", "method"])
images = data.few_shot(targets[cfg.picture_dataset][1], 1, 0)
tiles, tile_labels, names = [], [], []
for row_index, r in enumerate(picture_units.to_dict("records")):
    saved = prompting.load_unit(cfg.results_dir, {k: r[k] for k in prompting.SWEEP_KEY})
    prompt = prompting.prompt_with_theta(saved["theta"])
    with torch.no_grad():
        shown = prompt.unnormalized(data.to_float(images.images[:6])).clamp(0, 1)
    tiles.append((shown * 255).round().to(torch.uint8))
    tile_labels.append(torch.full((len(shown),), row_index))
    names.append(f"{r['model']} {r['method']}")
if tiles:
    fig = plots.image_grid(torch.cat(tiles), torch.cat(tile_labels), names, n_per_class=6,
                           classes=list(range(len(names))), title=f"learned prompts on {cfg.picture_dataset}")
    plots.save_figure(fig, cfg.figures_dir / "prompts.png")
    plt.show()

# %% [markdown]
# ## VP versus LP
#
# ILM-VP accuracy minus LP accuracy of the same model, target, budget and seed. LP trains
# 512·K_t + K_t values; the prompt 3·(S² − 32²), whatever the number of target classes.

# %%
vp_lp = runs[runs.method.isin(["ilm", "lp"])].pivot_table(
    index=["model", "family", "target", "images_per_class", "seed"], columns="method", values="accuracy")
if {"ilm", "lp"} <= set(vp_lp.columns):
    vp_lp = (vp_lp["ilm"] - vp_lp["lp"]).rename("vp_minus_lp").reset_index()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.lineplot(data=vp_lp, x="images_per_class", y="vp_minus_lp", hue="model", style="family",
                 markers=True, errorbar=None, ax=ax)
    ax.axhline(0, color="k", lw=1)
    ax.set(xscale="log", ylabel="ILM-VP − LP accuracy")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.legend(fontsize=7, ncols=2)
    plots.save_figure(fig, cfg.figures_dir / "vp_minus_lp.png")
    plt.show()
display(decided["params"].rename("trainable values"))

# %% [markdown]
# ## The paper's claims, measured
#
# The tables below carry the numbers the chapter page cites: dense accuracy per mapping and
# budget (claim 1), the dense − sparse gap per model, method and budget in points (claims
# 2–3), and the ECE difference sparse − dense (claim 4).

# %%
display((decided["mappings"] * 100).round(2))
if len(pairs):
    summary = pairs.groupby(["model", "method"]).agg(gap_points=("gap", "mean"), ece_sparse_minus_dense=("ece_gap", "mean"))
    summary["gap_points"] *= 100
    summary = summary.join(source_rows["accuracy"].rename("source_accuracy"), on="model")
    display(summary.round(4))

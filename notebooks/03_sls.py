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
# Han and Tang (ECCV 2024) transfer a pretrained ViT with small adapters (Convpass), then
# ask how deep the model needs to be for each target: the CLS features of every block are
# mapped to 2-D with t-SNE, scored by their silhouette with the class labels, and every block
# above the shallowest one still scoring at least α·SC_last is cut. We run the same
# pipeline on the source-pretrained ViT of the zoo and the four targets of notebook 00,
# and compare the truncated model with DepGraph width pruning that removes as many
# parameters.

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | paper (set by the runner)
run = "main"  # name of the config file (set by the runner)
seed = 0
threads = 0  # torch threads (0: $COMPSTUDY_THREADS, default 2); smoke uses 1
model = "vit"  # a ViT of the profile's zoo (smoke: vit_mini)
target_datasets = ["near", "middle", "far", "digits"]
petl_methods = ["convpass", "adapter"]  # the first gets the DepGraph comparison
petl_scale = 1.0  # adapter scale s
petl_scale_per_target = {}  # per-task s overrides, e.g. {"far": 10.0}
train_per_class = 30  # target training images per class (PETL, t-SNE, retraining)
test_per_class = 20
tsne_per_class = 20  # training images per class in each t-SNE map
petl_epochs = 6
petl_lr = 0.005
retrain_epochs = 3
retrain_lr = 0.002
batch_size = 30
alpha = 0.3  # threshold: alpha times the last layer's score
alphas = [0.3]  # the ablation run sweeps these (main: alpha only)
perplexity = 30.0
tsne_seed = 0
tsne_iter = 750  # total iterations (250 exaggerated), as sklearn's default run
tsne_jobs = 1
map_layers = [2, 4, 6, 8, 10, 12]  # blocks whose t-SNE maps are drawn
depgraph = True  # run the DepGraph width-pruning baseline
taylor_batches = 2  # batches of 32 training images for the Taylor importance
probe_check = True  # the premise check: per-layer linear probe vs silhouette
throughput_batches = [1, 64]
latency_seconds = 0.3  # minimum timing per throughput measurement
source_test_per_class = 30  # only when notebook 00's distances are missing

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import display

from compstudy import config, data, plots, petl, sls, train, zoo
from compstudy.results import RunStore
from compstudy.seeding import seed_everything
from compstudy.studies.sls import Config

cfg = Config.resolve(globals())
seed_everything(cfg.seed, threads=cfg.threads or None)
plots.set_style()
display(cfg.as_table())

# %%
full_depth = sls.validate_config(cfg)  # bad alpha, layer index or PETL method: stop here
backbone = zoo.upstream_model(cfg.model, cfg.profile)
targets = {}
for name in cfg.target_datasets:
    train_set = data.load_dataset(name, "train", cfg.train_per_class, cfg.seed)
    test_set = data.load_dataset(name, "test", cfg.test_per_class, cfg.seed)
    train_set = data.few_shot(train_set, cfg.train_per_class, cfg.seed)  # digits: whole split
    test_set = data.few_shot(test_set, cfg.test_per_class, cfg.seed)
    tsne_idx = data.few_shot_indices(train_set.labels, cfg.tsne_per_class, cfg.tsne_seed)
    targets[name] = (train_set, test_set, tsne_idx.numpy())
print(f"{cfg.model}: {full_depth} blocks; targets:",
      {n: (len(tr), len(te)) for n, (tr, te, _) in targets.items()})

# %% [markdown]
# ## PETL transfer and per-layer scores
#
# Each target gets its adapters (backbone frozen, adapters and head trained; cached under
# `artifacts/sls/`). Then every block's CLS features of the training images are mapped
# with t-SNE and scored by the silhouette, and a logistic-regression probe on the same
# features measures how linearly separable each layer is (the paper's premise, its Fig. 2).

# %%
store = RunStore(cfg.results_dir, key=["kind", "target", "method", "alpha", "layer"])
fit_petl = train.FitSettings(cfg.petl_epochs, cfg.petl_lr, optimizer="adamw", weight_decay=1e-4)
fit_retrain = train.FitSettings(cfg.retrain_epochs, cfg.retrain_lr, optimizer="adamw", weight_decay=1e-4)
spec = {"model": cfg.model, "profile": cfg.profile, "train_per_class": cfg.train_per_class}
tsne_spec = {"perplexity": cfg.perplexity, "seed": cfg.tsne_seed, "iter": cfg.tsne_iter,
             "per_class": cfg.tsne_per_class, "probe": cfg.probe_check, "test": cfg.test_per_class}
petl_models, score_cache = {}, {}
for name in cfg.target_datasets:
    train_set, test_set, tsne_idx = targets[name]
    for method in cfg.petl_methods:
        scale = cfg.petl_scale_per_target.get(name, cfg.petl_scale)
        model, key, _ = sls.petl_model(backbone, method, name, train_set, fit_petl, spec, scale,
                                       cfg.batch_size, cfg.seed)
        petl_models[name, method] = model
        score_key = config.digest({"petl": key, **tsne_spec})
        cached = sls.cached_scores(score_key)
        if cached is None:
            feats = sls.block_cls_features(model, train_set)
            scores, maps = sls.layer_scores(feats[:, tsne_idx], train_set.labels.numpy()[tsne_idx],
                                            cfg.perplexity, cfg.tsne_seed, cfg.tsne_jobs, cfg.tsne_iter)
            probe = np.full(len(scores), np.nan)
            if cfg.probe_check:
                probe = sls.layer_probe_accuracies(feats, train_set.labels.numpy(),
                                                   sls.block_cls_features(model, test_set),
                                                   test_set.labels.numpy(), cfg.seed)
            sls.save_scores(score_key, scores=scores, maps=maps, probe=probe)
            cached = {"scores": scores, "maps": maps, "probe": probe}
        score_cache[name, method] = cached
        unit = {"kind": "layer", "target": name, "method": method, "alpha": 0.0, "layer": 0}
        if unit in store.pending([unit]):
            store.add_many([unit | {"layer": layer, "silhouette": s, "probe_accuracy": p}
                            for layer, (s, p) in enumerate(zip(cached["scores"], cached["probe"]), 1)])

# %% [markdown]
# ## Silhouette versus depth and the kept depth
#
# The curve of every target and adapter, with the kept depth d (α = `alpha`) marked: d is
# the shallowest block such that every block from d to the top scores at least α·SC_last.

# %%
selections = {(n, m, a): sls.select_depth(c["scores"], a)
              for (n, m), c in score_cache.items() for a in sorted({cfg.alpha, *cfg.alphas})}
layers = store.frame.query("kind == 'layer'")
kept = pd.DataFrame([{"target": n, "method": m, "alpha": a, "kept_depth": s.depth,
                      "threshold": s.threshold, "rule": s.rule}
                     for (n, m, a), s in selections.items()])
display(kept.query("alpha == @cfg.alpha").set_index(["target", "method"]).round(3))

grid = sns.relplot(data=layers, x="layer", y="silhouette", hue="target", col="method",
                   kind="line", marker="o", height=3.2, aspect=1.2, hue_order=cfg.target_datasets)
for method, ax in grid.axes_dict.items():
    for i, name in enumerate(cfg.target_datasets):
        s = selections[name, method, cfg.alpha]
        ax.axvline(s.depth, color=sns.color_palette()[i], ls=":", lw=1.5)
grid.set_titles("{col_name}: silhouette of the t-SNE map (dotted: kept depth)")
plots.save_figure(grid.figure, cfg.figures_dir / "silhouette_vs_depth.png")
plt.show()

# %% [markdown]
# ## t-SNE maps of a few blocks
#
# Coloured by class; the title gives the silhouette and whether SLS keeps the block.

# %%
first = cfg.petl_methods[0]
fig = sls.plot_tsne_maps(
    {n: score_cache[n, first]["maps"] for n in cfg.target_datasets},
    {n: targets[n][0].labels.numpy()[targets[n][2]] for n in cfg.target_datasets},
    {n: score_cache[n, first]["scores"] for n in cfg.target_datasets},
    cfg.map_layers, {n: selections[n, first, cfg.alpha].depth for n in cfg.target_datasets})
plots.save_figure(fig, cfg.figures_dir / "tsne_maps.png")
plt.show()

# %% [markdown]
# ## Premise check: does the silhouette follow linear separability?
#
# The paper motivates the score by its agreement with per-layer linear-probe accuracy
# (its Fig. 2). Spearman's ρ between the two across the blocks of each target:

# %%
if cfg.probe_check:
    rho = pd.DataFrame([{"target": n, "method": m,
                         "spearman_rho": sls.spearman(c["scores"], c["probe"])}
                        for (n, m), c in score_cache.items()])
    display(rho.pivot(index="target", columns="method", values="spearman_rho").round(3))
    grid = sns.relplot(data=layers, x="silhouette", y="probe_accuracy", hue="layer",
                       col="target", row="method", palette="viridis", height=2.6,
                       col_order=cfg.target_datasets)
    for (method, name), ax in grid.axes_dict.items():
        r = rho.query("target == @name and method == @method").spearman_rho.item()
        ax.set_title(f"{method} · {name}: ρ = {r:.2f}")
    plots.save_figure(grid.figure, cfg.figures_dir / "premise_probe_vs_silhouette.png")
    plt.show()

# %% [markdown]
# ## Truncate, retrain and measure
#
# For every kept depth: the truncated model (blocks 1..d then the final norm) with its
# adapters and head retrained. The full-depth PETL model and, for the first adapter, the
# DepGraph Taylor width-pruned model with as many parameters removed (adapters and head
# retrained the same way) are measured alike: accuracy, parameters, per-task storage,
# throughput at batch 1 and 64 (2 threads).

# %%
measured = {}
sls_units = [{"kind": "sls", "target": n, "method": m, "alpha": float(a), "layer": 0}
             for n in cfg.target_datasets for m in cfg.petl_methods for a in cfg.alphas]
base_units = [{"kind": "petl", "target": n, "method": m, "alpha": 0.0, "layer": 0}
              for n in cfg.target_datasets for m in cfg.petl_methods]
for unit in store.pending(base_units):
    model = petl_models[unit["target"], unit["method"]]
    store.add(unit | sls.measure(model, targets[unit["target"]][1], "petl", cfg.throughput_batches,
                                 cfg.latency_seconds))
for unit in store.pending(sls_units):
    name, method = unit["target"], unit["method"]
    depth = selections[name, method, unit["alpha"]].depth
    if (name, method, depth) not in measured:
        train_set, test_set, _ = targets[name]
        model = sls.truncate(petl_models[name, method], depth)
        before = train.evaluate(model, data.make_loader(test_set, 256, shuffle=False))["accuracy"]
        petl.fit_petl(model, train_set, fit_retrain, cfg.batch_size, cfg.seed)
        measured[name, method, depth] = {"accuracy_before_retrain": before} | sls.measure(
            model, test_set, "sls", cfg.throughput_batches, cfg.latency_seconds)
    store.add(unit | measured[name, method, depth])

# %%
dg_units = [{"kind": "depgraph", "target": n, "method": first, "alpha": float(cfg.alpha), "layer": 0}
            for n in cfg.target_datasets] if cfg.depgraph else []
for unit in store.pending(dg_units):
    name = unit["target"]
    train_set, test_set, _ = targets[name]
    full = petl_models[name, first]
    depth = selections[name, first, cfg.alpha].depth
    target_removed = sum(p.numel() for p in full.parameters()) - sum(
        p.numel() for p in sls.truncate(full, depth).parameters())
    seed_everything(cfg.seed)
    pruned, info = sls.depgraph_prune(full, train_set, target_removed, cfg.taylor_batches, 32, cfg.seed)
    before = train.evaluate(pruned, data.make_loader(test_set, 256, shuffle=False))["accuracy"]
    petl.fit_petl(pruned, train_set, fit_retrain, cfg.batch_size, cfg.seed)
    store.add(unit | {"accuracy_before_retrain": before, "sls_removed": target_removed,
                      "heads_consistent": sls.attention_consistent(pruned),
                      **{f"depgraph_{k}": v for k, v in info.items()}}
              | sls.measure(pruned, test_set, "depgraph", cfg.throughput_batches, cfg.latency_seconds))

# %%
runs = store.frame
cols = ["accuracy", "accuracy_before_retrain", "depth", "parameters", "macs", "storage_kib"] + \
       [f"images_per_s_b{b}" for b in cfg.throughput_batches]
main_rows = runs[runs.kind.isin(["petl", "sls", "depgraph"])
                 & ((runs.kind != "sls") | (runs.alpha == cfg.alpha))]
summary = main_rows.set_index(["target", "method", "kind"])[[c for c in cols if c in runs]]
display(summary.loc[cfg.target_datasets].round(3))

# %%
if len(main_rows):
    plot_rows = main_rows.assign(model=main_rows.kind + " · " + main_rows.method)
    value_cols = ["accuracy"] + [f"images_per_s_b{b}" for b in cfg.throughput_batches] + ["storage_kib"]
    long = plot_rows.melt(id_vars=["target", "model"], value_vars=value_cols, var_name="metric")
    grid = sns.catplot(data=long, x="target", y="value", hue="model", col="metric", kind="bar",
                       sharey=False, height=3.0, aspect=1.1, order=cfg.target_datasets)
    grid.set_titles("{col_name}")
    plots.save_figure(grid.figure, cfg.figures_dir / "accuracy_speed_storage.png")
    plt.show()

# %% [markdown]
# ## Kept depth versus domain distance
#
# The paper finds most redundancy when the target is far from the pre-training data. The
# distance is the Fréchet distance measured by notebook 00 (or here, when it has not run).

# %%
source_test = None
if sls.read_distances(cfg.profile) is None:
    source_test = data.load_dataset("source", "test", cfg.source_test_per_class, cfg.seed)
distances, distance_source = sls.domain_distances(
    cfg.profile, backbone, source_test, {n: targets[n][1] for n in cfg.target_datasets})
depth_vs_distance = kept.query("alpha == @cfg.alpha").assign(
    distance=lambda f: f.target.map(distances))
display(depth_vs_distance.set_index(["target", "method"])[["distance", "kept_depth"]].round(2))
fig, ax = plt.subplots(figsize=(5, 3.4))
sns.scatterplot(data=depth_vs_distance, x="distance", y="kept_depth", hue="target",
                style="method", s=80, ax=ax, hue_order=cfg.target_datasets)
ax.set(xlabel=f"Fréchet distance to source ({distance_source})", ylabel="kept depth d",
       ylim=(0, full_depth + 0.5), title=f"α = {cfg.alpha}")
plots.save_figure(fig, cfg.figures_dir / "kept_depth_vs_distance.png")
plt.show()

# %% [markdown]
# ## Sensitivity to α
#
# Kept depth and retrained accuracy for each α of this run (one α in the main run).

# %%
sls_rows = runs[runs.kind == "sls"]
if len(cfg.alphas) > 1:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    sns.lineplot(data=sls_rows, x="alpha", y="depth", hue="target", style="method", marker="o",
                 ax=axes[0], hue_order=cfg.target_datasets)
    sns.lineplot(data=sls_rows, x="alpha", y="accuracy", hue="target", style="method", marker="o",
                 ax=axes[1], hue_order=cfg.target_datasets, legend=False)
    axes[0].set(ylabel="kept depth d", title="kept depth")
    axes[1].set(ylabel="test accuracy", title="SLS accuracy after retraining")
    plots.save_figure(fig, cfg.figures_dir / "alpha_ablation.png")
    plt.show()
display(sls_rows.pivot_table(index=["target", "method"], columns="alpha",
                             values=["depth", "accuracy"]).round(3))

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
# # 00 · The upstream model zoo
#
# Every chapter starts from models pretrained on a *source* task and transfers them to
# *targets*. The papers use ImageNet and real downstream datasets; the `cpu` and `smoke`
# profiles use the offline suite instead: a procedurally generated 100-class source
# (10 shape families × 10 texture/colour styles) and four targets at graded distance.
# This notebook shows every dataset, pretrains the zoo (two ResNets and a ViT), and
# measures how far each target lies from the source.

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | paper (set by the runner)
run = "main"  # name of the config file (set by the runner)
seed = 0
source_dataset = "source"
source_train_per_class = 120  # includes the validation images
source_val_per_class = 10  # held out of train for early stopping, never the test set
source_test_per_class = 30
target_datasets = ["near", "middle", "far", "digits"]
target_train_per_class = 100  # synthetic targets only; digits uses its whole split
target_test_per_class = 50
probe_shots = [5, -1]  # images per class for the linear probes (-1: all)
zoo_models = ["resnet18", "resnet34", "vit"]
epochs = {"resnet18": 8, "resnet34": 4, "vit": 10}
cnn_recipe = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0005, "label_smoothing": 0.1,
              "warmup_epochs": 1}
vit_recipe = {"optimizer": "adamw", "lr": 0.001, "weight_decay": 0.05, "label_smoothing": 0.1,
              "warmup_epochs": 1, "distillation": 0.5}
teachers = {"vit": "resnet18"}  # DeiT-style hard distillation: the ViT also learns the CNN's labels
batch_size = 128
distance_model = "resnet18"  # whose features measure source-to-target distance

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import display

from compstudy import data, features, models, plots, zoo
from compstudy.results import RunStore
from compstudy.seeding import seed_everything
from compstudy.studies.upstream import Config

cfg = Config.resolve(globals())
seed_everything(cfg.seed)
plots.set_style()
display(cfg.as_table())

# %% [markdown]
# ## The datasets
#
# A few images of every class of each dataset. The source mixes shape, texture and colour
# with clutter, affine jitter and noise; `near` reuses its primitives in new combinations,
# `middle` has textures only, `far` draws glyphs, and `digits` is scikit-learn's real
# handwritten digits upsampled to 32×32.

# %%
source_train, source_val, source_test = zoo.SourceSpec(
    cfg.source_dataset, cfg.source_train_per_class, cfg.source_test_per_class,
    cfg.source_val_per_class, cfg.seed).splits()
targets = {name: (data.load_dataset(name, "train", cfg.target_train_per_class, cfg.seed),
                  data.load_dataset(name, "test", cfg.target_test_per_class, cfg.seed))
           for name in cfg.target_datasets}
sizes = pd.DataFrame(
    [(cfg.source_dataset, len(source_train.classes), len(source_train), len(source_val), len(source_test))]
    + [(n, len(tr.classes), len(tr), 0, len(te)) for n, (tr, te) in targets.items()],
    columns=["dataset", "classes", "train", "val", "test"]).set_index("dataset")
display(sizes)

# %%
gallery = {cfg.source_dataset: source_train} | {n: tr for n, (tr, _) in targets.items()}
for name, images in gallery.items():
    shown = range(0, len(images.classes), max(1, len(images.classes) // 10))  # 10 rows at most
    fig = plots.image_grid(images.images, images.labels, images.classes, n_per_class=8,
                           classes=list(shown), title=name)
    plots.save_figure(fig, cfg.figures_dir / f"gallery_{name}.png")
    plt.show()

# %% [markdown]
# ## Pretraining the zoo
#
# Each model trains on the source with the recipe in the parameters above, early-stopping
# on held-out source images; checkpoints are cached under `artifacts/zoo/` keyed by the
# whole recipe, so chapters load exactly these weights.

# %%
store = RunStore(cfg.results_dir, key=["kind", "model", "dataset"])
specs = zoo.specs_from_params(cfg.params)
pretrained, histories = {}, []
for arch in cfg.zoo_models:
    if zoo.is_local(arch):
        model, payload = zoo.pretrain(specs[arch])
        histories.append(zoo.history_frame(payload))
        unit = {"kind": "source", "model": arch, "dataset": cfg.source_dataset}
        if unit in store.pending([unit]):
            store.add(unit | {"accuracy": payload["source_test_accuracy"],
                              "parameters": sum(p.numel() for p in model.parameters())})
    else:
        model = zoo.upstream_model(arch, cfg.profile)
    pretrained[arch] = model

if histories:
    fig = plots.training_curves(pd.concat(histories, ignore_index=True))
    plots.save_figure(fig, cfg.figures_dir / "training_curves.png")
    plt.show()

# %% [markdown]
# ## Linear probes: pretrained versus random initialisation
#
# A logistic-regression probe on frozen pre-logit features, for every model and target,
# with few and with all training images. The same architecture at random initialisation
# is the baseline the pretrained features must beat.

# %%
probe_units = [{"kind": f"probe_{init}", "model": arch, "dataset": name}
               for arch in cfg.zoo_models for init in ("pretrained", "random")
               for name in cfg.target_datasets]
for unit in store.pending(probe_units):
    seed_everything(cfg.seed)
    model = (pretrained[unit["model"]] if unit["kind"] == "probe_pretrained"
             else models.build_model(unit["model"], num_classes=10))
    accuracies = features.probe_accuracies(model, *targets[unit["dataset"]], cfg.probe_shots, cfg.seed)
    store.add_many([unit | {"shots": shots, "accuracy": acc} for shots, acc in accuracies.items()])

runs = store.frame
probes = runs[runs.kind.str.startswith("probe")].assign(init=lambda f: f.kind.str.removeprefix("probe_"))
table = probes.pivot_table(index=["model", "shots"], columns=["dataset", "init"], values="accuracy")
display(table.round(3))

# %%
grid = sns.catplot(data=probes.assign(shots=probes.shots.map(lambda s: "all" if s == -1 else f"{s}-shot")),
                   x="dataset", y="accuracy", hue="init", col="model", row="shots", kind="bar",
                   height=2.6, aspect=1.3, order=cfg.target_datasets)
grid.set_titles("{col_name} · {row_name}")
plots.save_figure(grid.figure, cfg.figures_dir / "probes.png")
plt.show()

# %% [markdown]
# ## How far is each target from the source?
#
# Measured, not asserted: the Fréchet distance between the source test features and each
# target's features in the pretrained feature space of the distance model (the FID
# formula), beside the gain of its pretrained probe over its random-init probe.

# %%
distance_arch = cfg.distance_model
source_features = features.extract_features(pretrained[distance_arch], source_test)
rows = []
for name in cfg.target_datasets:
    unit = {"kind": "distance", "model": distance_arch, "dataset": name}
    if unit in store.pending([unit]):
        target_features = features.extract_features(pretrained[distance_arch], targets[name][1])
        store.add(unit | {"distance": features.frechet_distance(source_features, target_features)})
runs = store.frame
distances = runs[runs.kind == "distance"].set_index("dataset")["distance"]
full = probes[probes.shots == -1].pivot_table(index=["model", "dataset"], columns="init",
                                                values="accuracy")
summary = pd.DataFrame({
    "frechet_distance": distances,
    "probe_pretrained": full.loc[distance_arch]["pretrained"],
    "probe_random": full.loc[distance_arch]["random"],
}).loc[cfg.target_datasets]
summary["probe_gain"] = summary.probe_pretrained - summary.probe_random
display(summary.round(3))

fig, ax = plt.subplots(figsize=(5, 3.2))
sns.barplot(x=summary.index, y=summary.frechet_distance, ax=ax, color=sns.color_palette()[0])
ax.set(xlabel="target", ylabel="Fréchet distance to source",
       title=f"feature space of {distance_arch}")
plots.save_figure(fig, cfg.figures_dir / "distances.png")
plt.show()

# %% [markdown]
# ## Source accuracy of the zoo

# %%
source_rows = runs[runs.kind == "source"][["model", "accuracy", "parameters"]]
display(source_rows.rename(columns={"accuracy": "source_test_accuracy"}).set_index("model").round(3))

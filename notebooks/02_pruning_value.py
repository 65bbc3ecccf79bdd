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
# Liu et al. (ICLR 2019) train a large network, prune it and fine-tune the survivors (**FT**),
# and compare with the *same pruned architecture* trained from a fresh random initialisation,
# for as many epochs as the large model (**Scratch-E**) or for the same compute (**Scratch-B**:
# epochs × MACs(large)/MACs(pruned), capped at 2×). Three families: predefined structured
# pruning (L1-norm filters: VGG-16-A, ResNet-A/B), automatic structured pruning (network
# slimming) and unstructured magnitude pruning. Here on the JPEG copy of CIFAR-10 at 32 px,
# with CIFAR VGG-16 and ResNet-20 narrowed to fit a CPU; a training-budget curve shows how far
# these budgets are from the converged regime the paper studies, and the mirror's converged
# ResNet-56 is pruned to Li et al.'s ResNet-56-A/B beside the paper's table.

# %% tags=["parameters"]
profile = "cpu"  # smoke | cpu | paper (set by the runner)
run = "main"  # name of the config file (set by the runner)
seed = 0  # data seed: which training images; the model seeds are `seeds`
dataset = "cifar10"  # the JPEG copy of CIFAR-10 (32 px)
train_per_class = 1000  # a seeded subset of the training split: 10,000 images
test_per_class = -1  # -1: the whole test split (10,000 images)
seeds = [0, 1, 2, 3, 4]  # model seeds: each fixes a large model and the runs pruned from it
methods = ["l1_vgg", "l1_resnet", "slimming", "unstructured"]
regimes = ["finetune", "scratch_e", "scratch_b"]
vgg_width = 0.125  # width multiplier of VGG-16: 8 to 64 channels
resnet_depth = 20  # 6n+2; the paper's is 56
resnet_width = 0.25  # width multiplier of the 16/32/64 stages: 4/8/16
vgg_layer_ratios = [0.5, 0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]  # Li et al.'s VGG-16-A
resnet_stage_ratios = {"B": [0.6, 0.3, 0.1]}  # Li et al.'s ResNet-56-B; "A": [0.1, 0.1, 0.1]
min_channels = 2  # floor on the channels a pruned layer keeps (Li et al.: 1)
slim_lambda = 0.003  # λ of the BN-scale L1 penalty (pilot: 0.01 zeroes nearly every scale, 0.001 too few)
slim_ratio = 0.4  # fraction of BN channels removed by the global threshold (pilot: about the share near zero)
unstructured_sparsity = 0.6  # fraction of conv weights masked (the paper's script default)
uniform_check = True  # train a uniformly thinned VGG-16 with the slimmed model's parameters
epochs = 8  # the large model's epochs (E); Scratch-E trains E, Scratch-B E·min(MAC ratio, cap)
lr = 0.1  # peak SGD rate (Nesterov, momentum 0.9) of the large and scratch models
warmup_epochs = 1.0  # linear warm-up, then cosine to 0
weight_decay = 0.0005
batch_size = 64
ft_fraction = 0.25  # FT trains epochs × ft_fraction (the paper: 40 of 160)
ft_lr = 0.001  # constant, as in the paper's CIFAR fine-tuning
scratch_b_cap = 2.0  # at most 2E epochs for Scratch-B (the paper's ImageNet cap)
budget_epochs = [2, 3, 4]  # extra large-model budgets of the training-budget curve (E is added)
budget_seeds = [0]  # seeds of the extra budgets (E has all seeds)
equivalence_margin = 2.0  # points: a difference inside ± this counts as "no difference"
converged_check = True  # the mirror's converged ResNet-56 → Li et al.'s A/B → brief JPEG FT
converged_ft_per_class = 200  # JPEG training images per class of the brief fine-tuning
converged_test_per_class = 200  # JPEG test images per class of the converged check
converged_ft_lr = 0.001
converged_weight_decay = 0.0001
workers = 2  # processes that train models side by side, one thread each (one per core); 0: in this process
measure_speed = True  # CPU latency of every structured model of the first seed
latency_batches = [1, 64]
latency_forwards = 50  # timing rounds per batch size: one forward of each model in turn per round

# %%
import matplotlib.pyplot as plt
import seaborn as sns
from IPython.display import display
from myst_nb import glue

from compstudy import claims, plots, scale
from compstudy.seeding import seed_everything
from compstudy.studies import pruning_value as study

cfg = study.Config.resolve(globals())
seed_everything(cfg.seed)
plots.set_style()
display(cfg.as_table())
results = study.run(cfg)
claims.glue_values({"train_images": results.train_images, "test_images": results.test_images,
                    "n_seeds": len(cfg.seeds), "epochs": cfg.epochs,
                    "vgg_width": cfg.vgg_width, "resnet_width": cfg.resnet_width,
                    "resnet_name": f"ResNet-{cfg.resnet_depth}", "lr": cfg.lr,
                    "warmup_epochs": cfg.warmup_epochs, "weight_decay": cfg.weight_decay,
                    "ft_lr": cfg.ft_lr, "ft_fraction": cfg.ft_fraction, "scratch_b_cap": cfg.scratch_b_cap,
                    "min_channels": cfg.min_channels, "slim_lambda": cfg.slim_lambda,
                    "slim_ratio_pct": 100 * cfg.slim_ratio,
                    "unstructured_pct": 100 * cfg.unstructured_sparsity,
                    "latency_batches": claims.and_join(cfg.latency_batches),
                    "latency_forwards": cfg.latency_forwards})
scale.record_scale(
    cfg, models=[t.label for t in results.targets.values()], resolution=32, targets=[cfg.dataset],
    budgets={"large-model epochs": cfg.epochs, "FT epochs": cfg.epochs * cfg.ft_fraction,
             "training images": results.train_images, "budget-curve epochs": cfg.budget_epochs,
             "converged-check FT images": cfg.converged_ft_per_class * 10 if cfg.converged_check else 0},
    seeds=cfg.seeds, test_images_per_target={cfg.dataset: results.test_images})

# %% [markdown]
# ## The main table
#
# Test accuracy (%) on the JPEG test split, mean ± sd over the seeds, with the paper's row
# under ours. The paper's numbers are full-width networks trained to convergence on the
# original CIFAR-10 (ImageNet for unstructured): compare the pattern across the columns, not
# the level. A seed fixes a large model; its FT inherits that model's weights, its Scratch-E/B
# take the architecture pruned from it.

# %%
table = study.main_table(results)
display(table)
glue("main_table", table, display=False)
spread = study.unpruned_spread(results)
display(spread.round(2))

# %% [markdown]
# Paired differences between regimes (same seed), in points, with the 95 % t-interval over
# seeds. Before fine-tuning, a pruned model has lost much of its large model's accuracy
# (`accuracy_before_ft`); FT at the paper's small constant rate recovers it only partly in
# this short regime.

# %% tags=["hide-output"]
diffs = study.differences(results)
display(diffs.round(2))
glue("precision", study.precision_text(spread, diffs), display=False)
before = results.runs[results.runs.regime == "finetune"].groupby("label").accuracy_before_ft.mean()
display(before.round(1))

# %%
fig = study.regimes_figure(results)
plots.publish(fig, cfg.figures_dir / "regimes.png", "regimes_figure")

# %% [markdown]
# ## The training-budget curve
#
# FT and Scratch-B of VGG-16-A, and the large VGG-16 they come from, against the large
# model's budget: FT trains a quarter of it at the small constant rate, Scratch-B 1.5× it
# (MAC ratio). The dotted line marks the main runs' budget (all seeds); the others have
# `budget_seeds`. The paper's claim is about the converged regime, at the right of this axis.

# %%
curve = study.budget_curve(results)
gaps = study.budget_gaps(results)
display(curve.round(2))
display(gaps.round(2))
fig = study.budget_figure(results, cfg.epochs)
plots.publish(fig, cfg.figures_dir / "budget_curve.png", "budget_figure")
glue("budget_table", curve.pivot_table(index="budget", columns="regime", values="mean").round(2),
     display=False)
glue("budget_crossover", study.crossover_text(gaps), display=False)
glue("budget_gap_min", float(gaps.gap.min()) if len(gaps) else float("nan"), display=False)
glue("budget_gap_max", float(gaps.gap.max()) if len(gaps) else float("nan"), display=False)

# %% [markdown]
# ## What network slimming keeps
#
# |γ| of the BN channels of the plain and the sparsity-trained VGG-16 (first seed): the penalty
# pushes most scales towards zero, so one global threshold separates the channels it keeps.
# Below, the kept widths per layer (one line per seed) beside the uniformly thinned VGG-16
# with the same parameters.

# %%
if not results.gammas.empty:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    sns.histplot(data=results.gammas, x="gamma", hue="model", bins=40, ax=axes[0], element="step")
    axes[0].set(xlabel="|γ| of a conv BN channel")
    widths = study.widths_frame(results)
    sns.lineplot(data=widths, x="layer", y="width", hue="model", units="seed", estimator=None,
                 marker="o", ax=axes[1])
    axes[1].set(xlabel="conv layer of VGG-16", ylabel="channels", xticks=range(1, 14))
    plots.publish(fig, cfg.figures_dir / "slimming.png", "slimming_figure")

# %% [markdown]
# ## The converged-model check
#
# The mirror's ResNet-56, trained to convergence on the original CIFAR-10 (akamaster), pruned
# by L1 norm to Li et al.'s ResNet-56-A and -B and fine-tuned for one pass over a small JPEG
# training subset; the unpruned model fine-tuned the same way is the control, since fine-tuning
# on JPEG images also adapts any model to the JPEG domain. Accuracies on JPEG test images.

# %%
if cfg.converged_check:
    converged = study.converged_table(results.converged)
    shown = converged.set_index("architecture").round(2)
    display(shown)
    glue("converged_table", shown, display=False)
    cells = converged[["before FT (%)", "after FT (%)", "vs FT control (points)"]]
    claims.glue_values(cells.set_axis(["before", "after", "vs_control"], axis=1).stack(), prefix="converged_")
    glue("converged_test_images", results.converged_test_images, display=False)

# %% [markdown]
# ## Measured speed-up versus MAC reduction
#
# CPU speed-up over its large model of every structured model of the first seed, at batch 1
# and a throughput batch, with its 95 % interval over the timing rounds: each large model and
# the models pruned from it take turns, one forward each per round, and each speed-up pairs
# the two times of a round. The latency column gives the median forward of the model, then of
# its large model. A speed-up ÷ MAC reduction of 1 turns every saved MAC into time.
# Unstructured models keep dense shapes and are never timed as faster.

# %%
if not results.speed.empty:
    speed = study.speed_page_table(results.speed, cfg.latency_batches)
    display(speed)
    glue("speed_table", speed, display=False)

# %% [markdown]
# ## Claims
#
# Each claim of the paper's sections 4-5 that this run can test: "Scratch-B ≥ FT" as a
# directional test of Scratch-B − FT, "≈" as an equivalence test within ± the margin, pooled
# claims with each (architecture, seed) as a unit.

# %%
display(claims.claims_html(results.claims))
claims.glue_claims(results.claims)
glue("equivalence_margin", cfg.equivalence_margin, display=False)

# %% [markdown]
# The same claims on every subset of the seeds: how many stay inconclusive with three seeds,
# with four, and with all of them. Where the fewest and the most differ, a verdict depends on
# which seeds were drawn.

# %%
stability = study.seed_stability(results.runs, cfg)
display(stability.round(2))
glue("seed_stability", stability.round(2), display=False)

# %% [markdown]
# CPU seconds spent training, per model and regime (measured when each model was trained).

# %% tags=["hide-output"]
costs = study.cost_table(results)
display(costs.round(1))
glue("train_cpu_total", float(costs.train_cpu_s.sum()), display=False)

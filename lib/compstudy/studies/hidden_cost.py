"""Notebook 01, the hidden cost of compression: dense, sparse and quantized sources transferred
by visual prompting (RLM / FLM / ILM) and linear probing under few-shot budgets.

What a run does, in order:

1. **Proxy split.** ``proxy_per_class`` images per class of ``proxy_dataset``'s train split
   (a fixed, seeded part) are the unlabeled proxy set: distillation, agreement and calibration
   images come from it, and no transfer run ever trains or tests on it (the transfer pool of
   that dataset is the rest of its train split; test images come from its test split).
2. **Sources.** The dense ImageNet model; each sparse family of :mod:`compstudy.methods.
   sparse_training` at each sparsity, distilled from the dense model on the proxy images; and
   fake-quantized copies (:mod:`compstudy.methods.quantization`) calibrated on proxy images.
   All are cached (:func:`compstudy.cache.cached`). Each gets its top-1 / top-5 agreement
   with the dense model on held-out proxy images and its accuracy on the 16 ImageNet stubs.
3. **Transfer units.** One unit = (model, target, method, budget, seed, image side), one row
   of ``runs.csv`` with typed columns. The dense model gets every method on every target and
   seed; compressed models get ``compressed_methods`` on the targets listed there, quantized
   ones with every seed, sparse ones with every seed or one seed per model in a Latin square
   over family x sparsity (``sparse_seeds``). Every frozen model is BatchNorm-folded and runs
   channels-last in float32.
4. **Claims** of Misra et al. (abstract and section 4: VP label mappings, the dense - sparse gap
   against method, budget and sparsity, calibration of sparse and quantized sources) through
   :mod:`compstudy.claims`.

The notebook's multi-panel figures are drawn here too (the ``*_figure`` functions at the end);
the notebook saves and glues them.
"""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from torch.nn import functional as F

from .. import assets, cache, claims, data, metrics, models, pool
from ..config import NotebookConfig
from ..errors import ConfigError
from ..methods import masks, prompting, quantization, sparse_training
from ..results import RunStore, atomic_write_bytes, atomic_write_text
from ..seeding import seed_everything
from ..train import progress_bar

UNIT_KEY = ("compression", "family", "sparsity", "bits", "target", "method", "shots", "seed",
            "image_side", "canvas")
SOURCE_KEY = ("compression", "family", "sparsity", "bits")
FLOAT_BITS = 32
MAX_JOBS = 9  # prompts trained in one shared pass (about 150 images a step at batch 16)


@dataclass(frozen=True)
class Config(NotebookConfig):
    NOTEBOOK = "01_hidden_cost"
    UPSTREAM = ("00_upstream/main",)  # the resolution table the chapter picks its sides from

    seed: int
    source_model: str
    proxy_dataset: str
    proxy_per_class: int
    kd_per_class: int
    agreement_per_class: int
    calibration_per_class: int
    kd_resolution: int
    sparse_families: dict[str, list[float]]
    kd_recipe: dict[str, float]
    quant_bits: list[int]
    targets: list[str]
    synthetic_per_class: int
    test_per_class: int
    shots: list[int]
    seeds: list[int]
    dense_methods: list[str]
    compressed_methods: dict[str, list[str]]
    sparse_seeds: str
    vp_image_sides: dict[str, list[int]]
    vp_border: int
    vp_epochs: int
    vp_lr: float
    vp_batch_size: int
    lp_epochs: int
    lp_lr: float
    lp_batch_size: int
    ece_bins: int
    ece_margin: float
    workers: int

    def validate(self) -> None:
        self.check_choices("source_model", models.upstream_names())
        natural = [name for name in data.dataset_names() if name not in data.SYNTHETIC]
        self.check_choices("proxy_dataset", natural)
        self.check_choices("targets", data.dataset_names())
        self.check_choices("dense_methods", prompting.METHODS)
        self.check_choices("sparse_seeds", ("latin", "all"))
        for key in ("proxy_per_class", "kd_per_class", "agreement_per_class",
                    "calibration_per_class", "synthetic_per_class", "test_per_class", "vp_border",
                    "vp_epochs", "vp_batch_size", "lp_epochs", "lp_batch_size", "ece_bins"):
            self.check_range(key, low=1)
        self.check_range("kd_resolution", low=16)
        self.check_range("workers", low=0)
        for key in ("vp_lr", "lp_lr", "ece_margin"):
            self.check_range(key, low=0, low_open=True)
        if not self.seeds or not self.shots or not self.targets:
            raise ConfigError("seeds, shots and targets each need at least one value")
        for n in self.shots:
            if n < 1:
                raise ConfigError(f"shots must be positive images per class, got {n!r}")
        for family, sparsities in self.sparse_families.items():
            if family not in sparse_training.FAMILIES:
                from ..errors import unknown_choice

                raise unknown_choice("sparse family", family, sparse_training.FAMILIES)
            if not sparsities:
                raise ConfigError(f"sparse family {family!r} needs at least one sparsity")
            for s in sparsities:
                masks.check_sparsity(s)
        try:
            recipe = sparse_training.KDRecipe(**self.kd_recipe)
        except TypeError as error:
            raise ConfigError(f"kd_recipe: {error}") from None
        if recipe.steps < 1 or recipe.batch_size < 1 or recipe.lr <= 0:
            raise ConfigError("kd_recipe needs steps >= 1, batch_size >= 1 and lr > 0")
        for bits in self.quant_bits:
            if not 2 <= bits <= 8:
                raise ConfigError(f"quant_bits must lie in [2, 8], got {bits!r}")
        for method, targets in self.compressed_methods.items():
            if method not in prompting.METHODS:
                from ..errors import unknown_choice

                raise unknown_choice("compressed_methods key", method, prompting.METHODS)
            outside = [t for t in targets if t not in self.targets]
            if outside:
                raise ConfigError(f"compressed_methods[{method!r}] names {outside[0]!r}, which is "
                                  f"not one of the targets {self.targets}")
        for target in self.targets:
            sides = self.vp_image_sides.get(target)
            if not sides:
                raise ConfigError(f"vp_image_sides has no side for target {target!r}")
            for side in sides:
                if side < 8:
                    raise ConfigError(f"vp_image_sides[{target!r}] must be at least 8 px, got {side}")
        proxy_parts = self.kd_per_class + self.agreement_per_class + self.calibration_per_class
        if proxy_parts > self.proxy_per_class:
            raise ConfigError(f"kd_per_class + agreement_per_class + calibration_per_class "
                              f"({proxy_parts}) exceed proxy_per_class ({self.proxy_per_class})")
        if self.synthetic_per_class < max(self.shots):
            raise ConfigError(f"shots up to {max(self.shots)} exceed the {self.synthetic_per_class} "
                              "generated images per class of the synthetic targets")

    @property
    def recipe(self) -> sparse_training.KDRecipe:
        return sparse_training.KDRecipe(**self.kd_recipe)

    def canvas(self, side: int) -> int:
        return side + 2 * self.vp_border


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ProxySplit:
    """The proxy parts of ``proxy_dataset``'s train split and the rest, left to transfer."""

    kd: data.ImageSet
    agreement: data.ImageSet
    calibration: data.ImageSet
    transfer: data.ImageSet

    @property
    def proxy_ids(self) -> torch.Tensor:
        return torch.cat([self.kd.ids, self.agreement.ids, self.calibration.ids])


def proxy_split(cfg: Config) -> ProxySplit:
    """A fixed, seeded part of the proxy dataset's train split, cut into disjoint roles.

    ``proxy_per_class`` images per class are the proxy; the rest of the split is the only
    place a transfer run may draw that dataset's training images from.
    """
    train = data.load_dataset(cfg.proxy_dataset, "train")
    halves = data.partition(train, {"proxy": cfg.proxy_per_class, "transfer": -1}, cfg.seed)
    parts = data.partition(halves["proxy"], {"kd": cfg.kd_per_class,
                                             "agreement": cfg.agreement_per_class,
                                             "calibration": cfg.calibration_per_class}, cfg.seed)
    return ProxySplit(parts["kd"], parts["agreement"], parts["calibration"], halves["transfer"])


def target_sets(cfg: Config, split: ProxySplit) -> dict[str, tuple[data.ImageSet, data.ImageSet]]:
    """(training pool, test set) of every target. The proxy dataset's pool excludes the proxy
    images; test sets hold ``test_per_class`` images per class (fewer where a class has fewer,
    e.g. digits: its whole test split)."""
    sets = {}
    for name in cfg.targets:
        if name in data.SYNTHETIC:
            train = data.load_dataset(name, "train", cfg.synthetic_per_class, cfg.seed)
            test = data.load_dataset(name, "test", cfg.synthetic_per_class, cfg.seed)
        else:
            train = split.transfer if name == cfg.proxy_dataset else data.load_dataset(name, "train")
            test = data.load_dataset(name, "test")
        for n in cfg.shots:
            data.few_shot_indices(train.labels, n, 0, train.classes, f"the {name} training pool")
        per_class = min(cfg.test_per_class, int(test.class_counts().min()))
        sets[name] = (train, data.few_shot(test, per_class, cfg.seed))
    return sets


# ----------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """One source model: its typed identity and the frozen (BN-folded) model that transfers."""

    compression: str  # dense | sparse | quantized
    family: str  # dense, a sparse family, or "fake-quant"
    sparsity: float
    bits: int
    model: torch.nn.Module = field(compare=False)
    raw: torch.nn.Module = field(compare=False)  # before folding (sparsity is measured here)
    build_cpu_seconds: float = 0.0

    @property
    def identity(self) -> dict:
        return {"compression": self.compression, "family": self.family,
                "sparsity": float(self.sparsity), "bits": int(self.bits)}

    @property
    def label(self) -> str:
        return model_label(self.compression, self.family, self.sparsity, self.bits)


def model_label(compression: str, family: str, sparsity: float, bits: int) -> str:
    """A model's display name from its typed columns (never parsed back)."""
    if compression == "sparse":
        return f"{family} {round(100 * sparsity)}%"
    if compression == "quantized":
        return f"int{bits}"
    return "dense"


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """The BatchNorm-folded, channels-last, frozen copy that every transfer pass uses."""
    out = quantization.fold_batchnorm(model).to(memory_format=torch.channels_last)
    for p in out.parameters():
        p.requires_grad_(False)
    return out.eval()


def _asset_digest(name: str) -> str:
    asset = {"efficientnet_lite0": "efficientnet_lite0", "deit_tiny": "deit_tiny_mat"}.get(name)
    return assets.MANIFEST[asset].sha256 if asset else name


def _state_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@torch.no_grad()
def logits_of(model: torch.nn.Module, images01: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Source logits of [0, 1] images already at the model's side (normalised here)."""
    model.eval()
    return torch.cat([model(models.adapt_input(model, images01[i:i + batch_size])
                            .contiguous(memory_format=torch.channels_last))
                      for i in range(0, len(images01), batch_size)])


def _student(cfg: Config) -> torch.nn.Module:
    return models.upstream_model(cfg.source_model, cfg.kd_resolution)


def sparse_sources(cfg: Config, split: ProxySplit, dense: torch.nn.Module,
                   progress: bool = True) -> list[Source]:
    """Every sparse model of the config, from the cache or distilled now."""
    images = prompting.resize(split.kd.images, cfg.kd_resolution)
    teacher: dict[str, torch.Tensor] = {}

    def teacher_logits() -> torch.Tensor:  # computed once, only when a model must be made
        if "kd" not in teacher:
            teacher["kd"] = logits_of(frozen(dense), images)
        return teacher["kd"]

    proxy = {"dataset": cfg.proxy_dataset, "proxy_per_class": cfg.proxy_per_class,
             "kd_per_class": cfg.kd_per_class, "resolution": cfg.kd_resolution, "seed": cfg.seed}
    sources = []
    jobs = [(f, [s]) for f, ss in cfg.sparse_families.items() if f != "imp" for s in ss]
    jobs += [("imp", ss) for f, ss in cfg.sparse_families.items() if f == "imp"]
    bar = progress_bar(len(jobs), "sparse models", progress)
    for family, sparsities in jobs:
        def build(family=family, sparsities=sparsities) -> dict:
            start = time.process_time()
            made = sparse_training.make_sparse(family, _student(cfg), sparsities, images,
                                               teacher_logits(), cfg.recipe, cfg.seed)
            return {"state_dicts": {s: m.state_dict() for s, m in made.items()},
                    "cpu_seconds": (time.process_time() - start) / len(made)}

        inputs = {"model": cfg.source_model, "weights": _asset_digest(cfg.source_model),
                  "family": family, "sparsities": sorted(float(s) for s in sparsities),
                  "recipe": asdict(cfg.recipe), "proxy": proxy}
        payload = cache.cached("sparse", inputs, [sparse_training, data, prompting], build,
                               save=_state_bytes)
        for s in sparsities:
            raw = _student(cfg)
            raw.load_state_dict(payload["state_dicts"][float(s)])
            sources.append(Source("sparse", family, float(s), FLOAT_BITS, frozen(raw), raw.eval(),
                                  payload["cpu_seconds"]))
        bar.update()
    bar.close()
    order = {f: i for i, f in enumerate(cfg.sparse_families)}
    return sorted(sources, key=lambda src: (order[src.family], src.sparsity))


def quantized_sources(cfg: Config, split: ProxySplit, dense: torch.nn.Module) -> list[Source]:
    """The fake-quantized copies of the dense model, calibrated on proxy images (cached)."""
    folded = frozen(dense)
    calibration = models.adapt_input(dense, prompting.resize(split.calibration.images, cfg.kd_resolution))
    sources = []
    for bits in cfg.quant_bits:
        def build(bits=bits) -> dict:
            start = time.process_time()
            model = quantization.calibrate(quantization.fake_quantize(folded, bits), calibration)
            return {"state_dict": model.state_dict(), "cpu_seconds": time.process_time() - start}

        inputs = {"model": cfg.source_model, "weights": _asset_digest(cfg.source_model), "bits": bits,
                  "calibration": {"dataset": cfg.proxy_dataset, "proxy_per_class": cfg.proxy_per_class,
                                  "kd_per_class": cfg.kd_per_class,
                                  "agreement_per_class": cfg.agreement_per_class,
                                  "per_class": cfg.calibration_per_class,
                                  "resolution": cfg.kd_resolution, "seed": cfg.seed}}
        payload = cache.cached("quantized", inputs, [quantization, data, prompting], build,
                               save=_state_bytes)
        model = quantization.fake_quantize(folded, bits)
        model.load_state_dict(payload["state_dict"])
        quantization.freeze(model)
        sources.append(Source("quantized", "fake-quant", 0.0, bits, model.eval(), model,
                              payload["cpu_seconds"]))
    return sources


def make_sources(cfg: Config, split: ProxySplit, progress: bool = True) -> list[Source]:
    """The dense model, its quantized copies and the sparse models, from the cache or made now."""
    dense = _student(cfg)
    sources = [Source("dense", "dense", 0.0, FLOAT_BITS, frozen(dense), dense)]
    sources += quantized_sources(cfg, split, dense)
    return sources + sparse_sources(cfg, split, dense, progress)


def stub_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The 16 ImageNet stub images through timm's evaluation transform at 224 px, and labels."""
    from timm.data import create_transform, resolve_data_config

    reference = models.upstream_model("efficientnet_lite0")
    transform = create_transform(**resolve_data_config({}, model=reference))
    stubs = data.imagenet_stubs()
    return (torch.stack([transform(image) for _, image, _ in stubs]),
            torch.tensor([label for _, _, label in stubs]))


def measure_sources(cfg: Config, sources: Sequence[Source], split: ProxySplit,
                    progress: bool = True) -> pd.DataFrame:
    """Agreement with the dense model on held-out proxy images, stub accuracy and sparsity of
    every source; one row each in ``sources/runs.csv``."""
    store = RunStore(cfg.results_dir / "sources", key=SOURCE_KEY, required=("agreement_top1",))
    pending = list(store.pending([s.identity for s in sources]))
    if pending:
        held_out = prompting.resize(split.agreement.images, cfg.kd_resolution)
        dense = next(s for s in sources if s.compression == "dense")
        reference = logits_of(dense.model, held_out).argmax(1)
        stubs, stub_labels = stub_batch()
        wanted = {tuple(str(u[k]) for k in SOURCE_KEY) for u in pending}
        bar = progress_bar(len(pending), "source checks", progress)
        for src in sources:
            if tuple(str(v) for v in src.identity.values()) not in wanted:
                continue
            logits = logits_of(src.model, held_out)
            top5 = logits.topk(5, dim=1).indices
            with torch.no_grad():
                stub_pred = src.model(stubs.contiguous(memory_format=torch.channels_last)).argmax(1)
            store.add(src.identity | {
                "model": src.label,
                "agreement_top1": float((logits.argmax(1) == reference).float().mean()),
                "agreement_top5": float((top5 == reference[:, None]).any(1).float().mean()),
                "stubs_correct": int((stub_pred == stub_labels).sum()), "stubs": len(stub_labels),
                "conv_sparsity": masks.conv_sparsity(src.raw) if src.compression != "quantized" else 0.0,
                "agreement_images": len(held_out), "build_cpu_seconds": src.build_cpu_seconds})
            bar.update()
        bar.close()
    return store.frame


def layer_table(sources: Sequence[Source]) -> pd.DataFrame:
    """Sparsity of every conv layer of every sparse model (raw weights), with the layer's kind."""
    rows = []
    for src in sources:
        if src.compression != "sparse":
            continue
        modules = dict(src.raw.named_modules())
        for name, value in masks.layer_sparsity(src.raw).items():
            conv = modules[name]
            kind = ("depthwise" if conv.groups > 1 else "pointwise" if conv.kernel_size == (1, 1)
                    else "full")
            rows.append({"family": src.family, "sparsity": src.sparsity, "layer": name,
                         "kind": kind, "weights": conv.weight.numel(), "layer_sparsity": value})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- units


def units(cfg: Config, sources: Sequence[Source]) -> list[dict]:
    """Every transfer unit of the run, with typed columns (see the module docstring).

    ``canvas`` is the side of the model's input: VP's image window plus its border, and for LP
    the same side, to which the image is resized (the paper's LP resizes its inputs to the
    224-px input that VP's canvas fills).
    """
    out = []
    family_index = {f: i for i, f in enumerate(cfg.sparse_families)}
    for src in sources:
        if src.compression == "dense":
            plan = {m: cfg.targets for m in cfg.dense_methods}
            seeds = cfg.seeds
        else:
            plan = cfg.compressed_methods
            seeds = cfg.seeds
            if src.compression == "sparse" and cfg.sparse_seeds == "latin":
                k = family_index[src.family] + sorted(cfg.sparse_families[src.family]).index(src.sparsity)
                seeds = [cfg.seeds[k % len(cfg.seeds)]]
        for method, targets in plan.items():
            for target in cfg.targets:
                if target not in targets:
                    continue
                for side, shots, seed in itertools.product(cfg.vp_image_sides[target], cfg.shots, seeds):
                    out.append(src.identity | {
                        "target": target, "method": method, "shots": int(shots), "seed": int(seed),
                        "image_side": int(side), "canvas": cfg.canvas(side)})
    return out


def _model_key(unit: Mapping) -> tuple:
    return tuple(unit[k] for k in SOURCE_KEY)


def groups(all_units: Sequence[dict]) -> list[list[dict]]:
    """The units computed together, in order of first appearance.

    VP units of one model, budget and image side learn their prompts in shared passes, in
    chunks of at most :data:`MAX_JOBS` (targets, mappings and seeds mixed); LP units of one
    model and target share the frozen features.
    """
    keyed: dict[tuple, list[dict]] = {}
    for unit in all_units:
        if unit["method"] == "lp":
            key = _model_key(unit) + ("lp", unit["target"], unit["image_side"])
        else:
            key = _model_key(unit) + ("vp", unit["shots"], unit["image_side"])
        keyed.setdefault(key, []).append(unit)
    out = []
    for members in keyed.values():
        out += [members[i:i + MAX_JOBS] for i in range(0, len(members), MAX_JOBS)]
    return out


def summarize(probs: torch.Tensor, labels: torch.Tensor, n_bins: int) -> dict[str, float]:
    """Accuracy, ECE, mean confidence, NLL and true-class confidence of right / wrong predictions."""
    tcc = metrics.true_class_confidence(probs, labels)
    right, wrong = tcc[tcc.correct], tcc[~tcc.correct]
    return {
        "accuracy": metrics.accuracy(probs, labels),
        "ece": metrics.expected_calibration_error(probs, labels, n_bins),
        "mean_confidence": float(probs.max(1).values.mean()),
        "nll": float(F.nll_loss(probs.clamp_min(1e-12).log(), labels)),
        "true_conf_correct": float(right.confidence_true.mean()) if len(right) else float("nan"),
        "true_conf_wrong": float(wrong.confidence_true.mean()) if len(wrong) else float("nan"),
    }


class Images:
    """Resized images of the run, made once per (target, split, side) and reused."""

    def __init__(self, targets: Mapping[str, tuple[data.ImageSet, data.ImageSet]]):
        self.targets = targets
        self._test: dict[tuple[str, int], torch.Tensor] = {}

    def test(self, target: str, side: int) -> torch.Tensor:
        if (target, side) not in self._test:
            self._test[target, side] = prompting.resize(self.targets[target][1].images, side)
        return self._test[target, side]

    def train(self, target: str, indices: torch.Tensor, side: int) -> torch.Tensor:
        return prompting.resize(self.targets[target][0].images[indices], side)


def _indices(pool: data.ImageSet, unit: Mapping) -> torch.Tensor:
    return data.few_shot_indices(pool.labels, unit["shots"], unit["seed"], pool.classes, pool.name)


def run_vp_group(cfg: Config, model: torch.nn.Module, group: Sequence[dict], images: Images,
                 progress: bool = False) -> list[dict]:
    """Train and evaluate the prompts of one group; one output per unit."""
    targets = images.targets
    side = group[0]["image_side"]
    picks = [_indices(targets[u["target"]][0], u) for u in group]
    pool_parts, labels_parts, offsets, jobs = {}, {}, {}, []
    start = 0
    for unit, idx in zip(group, picks):  # the union of each target's training images, once
        t = unit["target"]
        pool_parts.setdefault(t, set()).update(idx.tolist())
    for t, chosen in pool_parts.items():
        chosen = torch.tensor(sorted(chosen))
        offsets[t] = (start, {int(i): start + k for k, i in enumerate(chosen.tolist())})
        pool_parts[t] = images.train(t, chosen, side)
        labels_parts[t] = targets[t][0].labels[chosen]
        start += len(chosen)
    pool = torch.cat(list(pool_parts.values()))
    labels = torch.cat(list(labels_parts.values()))
    for unit, idx in zip(group, picks):
        where = offsets[unit["target"]][1]
        jobs.append(prompting.PromptJob(torch.tensor([where[int(i)] for i in idx]), unit["method"],
                                        unit["seed"]))
    classes = {len(targets[u["target"]][0].classes) for u in group}
    if len(classes) != 1:
        raise ValueError("prompts trained together need targets with one number of classes")
    settings = prompting.PromptSettings(epochs=cfg.vp_epochs, lr=cfg.vp_lr,
                                        batch_size=cfg.vp_batch_size, canvas=cfg.canvas(side))
    results = prompting.train_prompts(model, pool, labels, classes.pop(), jobs, settings, progress)
    outputs = []
    for unit, idx, result in zip(group, picks, results):
        probs = prompting.target_probabilities(model, [result], images.test(unit["target"], side))[0]
        outputs.append({"probs": probs, "labels": targets[unit["target"]][1].labels,
                        "train_images": len(idx), "trainable_parameters": result.prompt.free_parameters(),
                        "mapping_updates": len(result.mapping_epochs),
                        "classes": len(targets[unit["target"]][0].classes)})
    return outputs


def run_lp_group(cfg: Config, model: torch.nn.Module, group: Sequence[dict], images: Images) -> list[dict]:
    """Features of one model and target (once), then one probe per unit."""
    target = group[0]["target"]
    pool, test = images.targets[target]
    picks = [_indices(pool, u) for u in group]
    union = torch.tensor(sorted(set(itertools.chain.from_iterable(p.tolist() for p in picks))))
    where = {int(i): k for k, i in enumerate(union.tolist())}
    side = group[0]["canvas"]  # the model's input side under VP, as the paper's LP reads 224 px
    train_x = prompting.pooled_features(model, images.train(target, union, side))
    test_x = prompting.pooled_features(model, images.test(target, side))
    outputs = []
    for unit, idx in zip(group, picks):
        rows = torch.tensor([where[int(i)] for i in idx])
        head = prompting.linear_probe(train_x[rows], pool.labels[idx], len(pool.classes), cfg.lp_epochs,
                                      cfg.lp_lr, cfg.lp_batch_size, unit["seed"])
        with torch.no_grad():
            probs = head(test_x).softmax(1)
        outputs.append({"probs": probs, "labels": test.labels, "train_images": len(idx),
                        "trainable_parameters": prompting.probe_parameters(train_x.shape[1], len(pool.classes)),
                        "mapping_updates": 0, "classes": len(pool.classes)})
    return outputs


def _prediction_path(cfg: Config, unit: Mapping):
    identity = [str(unit[k]) for k in UNIT_KEY]  # as runs.csv reads back (RunStore.unit_key)
    return cfg.results_dir / "predictions" / f"{cache.digest(identity)}.pt"


def load_probabilities(cfg: Config, unit: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
    """The saved test probabilities and labels of one unit (a row of ``runs.csv``)."""
    saved = torch.load(_prediction_path(cfg, unit), map_location="cpu", weights_only=True)
    return saved["probs"].float(), saved["labels"]


def run_sweep(cfg: Config, sources: Sequence[Source], images: Images, all_units: Sequence[dict],
              progress: bool = True) -> pd.DataFrame:
    """Compute every pending unit and add its row to ``runs.csv`` (resumable).

    The groups (:func:`groups`) run side by side in ``cfg.workers`` one-thread processes
    (:func:`compstudy.pool.results`), the longest first; the rows of a group are written as it
    finishes. A group with any pending unit is computed whole, so a resumed run gives the
    numbers of an uninterrupted one; only its missing rows are written, in one go. Test
    probabilities are saved per unit (float16) for reliability diagrams. ``cpu_seconds`` of a
    unit is its group's CPU time divided by the group's size.
    """
    store = RunStore(cfg.results_dir, key=UNIT_KEY, required=("accuracy",))
    labels = {tuple(src.identity.values()): src.label for src in sources}
    pending = {store.unit_key(u) for u in store.pending(all_units)}
    todo = [group for group in groups(all_units) if any(store.unit_key(u) in pending for u in group)]
    # spawned workers load the models and images from the cache; only in-process runs share them
    shared = (sources, images) if cfg.workers == 0 else (None, None)
    done = pool.results(_group_in_worker, todo, start=_start_worker, start_args=(cfg, *shared),
                        workers=cfg.workers, cost=lambda group: _group_cost(cfg, group),
                        desc="transfer groups", progress=progress)
    for group, (outputs, seconds) in done:
        rows = []
        for unit, out in zip(group, outputs):
            if store.unit_key(unit) not in pending:
                continue
            probs, test_labels = torch.from_numpy(out["probs"]), torch.from_numpy(out["labels"])
            atomic_write_bytes(_prediction_path(cfg, unit), _state_bytes(
                {"probs": probs.half(), "labels": test_labels}))
            rows.append(dict(unit) | {"model": labels[_model_key(unit)]}
                        | summarize(probs, test_labels, cfg.ece_bins)
                        | {"train_images": out["train_images"], "test_images": len(test_labels),
                           "trainable_parameters": out["trainable_parameters"],
                           "mapping_updates": out["mapping_updates"], "classes": out["classes"],
                           "cpu_seconds": seconds})
        store.add_many(rows)
    return store.frame


def _group_cost(cfg: Config, group: Sequence[dict]) -> float:
    """Rough cost of a group: training images times epochs (LP's probes are cheap)."""
    epochs = cfg.lp_epochs / 50 if group[0]["method"] == "lp" else cfg.vp_epochs
    return epochs * sum(u["shots"] for u in group)


def _start_worker(cfg: Config, sources: Sequence[Source] | None, images: Images | None) -> tuple:
    """A worker's models and images: the run's own in the notebook's process, else from the
    cache (the parent has made every model before the sweep)."""
    seed_everything(cfg.seed, threads=pool.THREADS)
    if sources is None:
        split = proxy_split(cfg)
        sources, images = make_sources(cfg, split, progress=False), Images(target_sets(cfg, split))
    return cfg, images, {tuple(src.identity.values()): src.model for src in sources}


def _group_in_worker(state: tuple, group: list[dict]) -> tuple[list[dict], float]:
    """One group's outputs (probabilities and labels as arrays, which pickle without shared
    memory) and CPU seconds per unit, on ``pool.THREADS`` threads."""
    cfg, images, models_by_key = state
    model = models_by_key[_model_key(group[0])]
    seed_everything(group[0]["seed"], threads=pool.THREADS)
    start = time.process_time()
    if group[0]["method"] == "lp":
        outputs = run_lp_group(cfg, model, group, images)
    else:
        outputs = run_vp_group(cfg, model, group, images)
    seconds = (time.process_time() - start) / len(group)
    return [out | {"probs": out["probs"].numpy(), "labels": out["labels"].numpy()} for out in outputs], seconds


# ----------------------------------------------------------------------------- analysis


PAIR_KEY = ["target", "method", "shots", "seed", "image_side", "canvas"]


def pairs(runs: pd.DataFrame) -> pd.DataFrame:
    """Every compressed unit beside the dense unit of the same target, method, budget, seed and
    side: ``gap`` = dense - compressed accuracy and ``ece_diff`` = compressed - dense ECE, in
    points."""
    dense = runs[runs.compression == "dense"][PAIR_KEY + ["accuracy", "ece"]]
    other = runs[runs.compression != "dense"]
    joined = other.merge(dense, on=PAIR_KEY, suffixes=("", "_dense"), how="inner")
    return joined.assign(gap=100 * (joined.accuracy_dense - joined.accuracy),
                         ece_diff=100 * (joined.ece - joined.ece_dense)).reset_index(drop=True)


def _cells(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return frame[list(columns)].astype(str).agg("/".join, axis=1).tolist()


CLAIMS = {
    "1a": claims.Claim(
        "1a", "ILM beats FLM with a dense source (VP accuracy, points)",
        "ILM-VP RN18: CIFAR-100 24.8 vs 18.1 %, Flowers102 27.9 vs 20.0 % (ILM vs FLM)",
        "accuracy_vs_budget.png; mappings table"),
    "1b": claims.Claim(
        "1b", "FLM beats RLM with a dense source (VP accuracy, points)",
        "ILM-VP RN18: FLM 18.1 vs RLM 12-13 % on CIFAR-100, 20.0 vs 11 % on Flowers102",
        "accuracy_vs_budget.png; mappings table"),
    "2a": claims.Claim(
        "2a", "The dense - sparse accuracy gap is larger under VP than under LP (points)",
        "compression hurts VP-based transfer more (abstract; values in figures only)",
        "gap_vs_budget.png"),
    "2b": claims.Claim(
        "2b", "The VP gap grows as the budget shrinks: gap(smallest) - gap(largest budget), points",
        "the cost is largest with little data (abstract; figures only)", "gap_vs_budget.png"),
    "3": claims.Claim(
        "3", "The VP gap grows with sparsity: gap(highest) - gap(lowest sparsity), points",
        "lottery tickets are not universal reprogrammers (v1 abstract)", "gap_vs_sparsity.png"),
    "4": claims.Claim(
        "4", "Sparse sources have higher ECE after VP than the dense one (points)",
        "sparsity hurts the calibration of VP-transferred models (abstract)", "reliability.png"),
    "5": claims.Claim(
        "5", "Quantized sources add no calibration penalty after VP: their ECE exceeds the dense "
        "one's by less than the margin (non-inferiority, points)",
        "quantization does not show the calibration penalty (v3 abstract)", "reliability.png",
        direction=-1),
    "6": claims.Claim(
        "6", "VP trains a number of values independent of K_t; LP trains d K_t + K_t",
        "512 K_t + K_t for RN18 (by construction)", "parameters table"),
}


def _vp(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame.method == "ilm"]


def budget_gap_changes(cfg: Config, vp_pairs: pd.DataFrame) -> pd.DataFrame:
    """Claim 2b's units: per sparse model, target and seed, the ILM gap at the smallest budget
    minus the one at the largest (``change``, points); empty with a single budget."""
    lo_n, hi_n = min(cfg.shots), max(cfg.shots)
    by_n = vp_pairs.pivot_table(index=["family", "sparsity", "target", "seed"], columns="shots", values="gap")
    if lo_n == hi_n or not {lo_n, hi_n} <= set(by_n.columns):
        return pd.DataFrame(columns=["family", "sparsity", "target", "seed", "change"])
    b = by_n[[lo_n, hi_n]].dropna().reset_index()
    return b.assign(change=b[lo_n] - b[hi_n])[["family", "sparsity", "target", "seed", "change"]]


def decide(cfg: Config, runs: pd.DataFrame) -> list[claims.ClaimResult]:
    """The claims a run can test, decided on its units (see the page for the designs).

    Units that share a dense comparator are not independent, so sparse-vs-dense claims are
    clustered by the dense unit(s) they share; the engine then takes the t-interval for up to
    ten clusters and the cluster bootstrap above.
    """
    out = []
    dense = runs[(runs.compression == "dense") & (runs.method != "lp")]
    wide = dense.pivot_table(index=["target", "shots", "seed", "image_side"], columns="method",
                             values="accuracy")
    for cid, (hi, lo) in {"1a": ("ilm", "flm"), "1b": ("flm", "rlm")}.items():
        if {hi, lo} <= set(wide.columns):
            d = (100 * (wide[hi] - wide[lo])).dropna()
            out.append(claims.directional(CLAIMS[cid], d.to_numpy()))
    p = pairs(runs)
    sparse = p[p.compression == "sparse"]
    if len(sparse):
        both = sparse.pivot_table(index=["family", "sparsity", "target", "shots", "seed"],
                                  columns="method", values="gap")
        if {"ilm", "lp"} <= set(both.columns):
            b = both[["ilm", "lp"]].dropna().reset_index()
            out.append(claims.directional(CLAIMS["2a"], (b.ilm - b.lp).to_numpy(),
                                          cluster=_cells(b, ["target", "shots", "seed"])))
        vp = _vp(sparse)
        b = budget_gap_changes(cfg, vp)
        if len(b):
            out.append(claims.directional(CLAIMS["2b"], b.change.to_numpy(),
                                          cluster=_cells(b, ["target", "seed"])))
        by_s = vp.pivot_table(index=["family", "target", "shots"], columns="sparsity", values="gap")
        if by_s.shape[1] >= 2:
            lo_s, hi_s = by_s.columns.min(), by_s.columns.max()
            b = by_s[[lo_s, hi_s]].dropna().reset_index()
            out.append(claims.directional(CLAIMS["3"], (b[hi_s] - b[lo_s]).to_numpy(),
                                          cluster=_cells(b, ["target", "shots"])))
        if len(vp):
            out.append(claims.directional(CLAIMS["4"], vp.ece_diff.to_numpy(),
                                          cluster=_cells(vp, ["target", "shots", "seed"])))
    quant = _vp(p[p.compression == "quantized"])
    if len(quant):
        out.append(claims.non_inferiority(CLAIMS["5"], quant.ece_diff.to_numpy(), cfg.ece_margin))
    params = parameter_table(runs)
    if len(params):
        out.append(claims.not_testable(
            CLAIMS["6"], "holds by construction; the counts are in the parameters table: "
            + "; ".join(f"{r.method} {r.trainable_parameters:,} (K_t {r.classes})"
                        for r in params.itertuples())))
    return out


def parameter_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Trainable values per method and image side (VP) or feature width (LP)."""
    if runs.empty:
        return pd.DataFrame(columns=["method", "image_side", "canvas", "classes", "trainable_parameters"])
    first = runs[runs.compression == "dense"].drop_duplicates(["method", "image_side", "canvas", "classes"])
    return first[["method", "image_side", "canvas", "classes", "trainable_parameters"]].reset_index(drop=True)


def interval_frame(frame: pd.DataFrame, by: Sequence[str], value: str) -> pd.DataFrame:
    """Mean of ``value`` per group with its 95 % t-interval (n = rows of the group)."""
    rows = []
    for key, group in frame.groupby(list(by), sort=True):
        values = group[value].to_numpy(dtype=float)
        if len(values) >= 2:
            iv = claims.t_interval(values)
            low, high = iv.ci_low, iv.ci_high
        else:
            low = high = float("nan")
        rows.append(dict(zip(by, key if isinstance(key, tuple) else (key,)))
                    | {"mean": float(values.mean()), "ci_low": low, "ci_high": high, "n": len(values)})
    return pd.DataFrame(rows)


def domain_check(cfg: Config, p: pd.DataFrame) -> dict[str, float] | None:
    """Whether distillation on proxy images biases the LP gap on the proxy's own dataset: the
    LP gap on ``proxy_dataset`` minus the mean LP gap on the other targets, per sparse model
    (paired by model), with its 95 % CI. ``None`` when the run cannot measure it."""
    lp = p[(p.compression == "sparse") & (p.method == "lp")]
    if cfg.proxy_dataset not in set(lp.target) or lp.target.nunique() < 2:
        return None
    per = lp.assign(on_proxy=lp.target == cfg.proxy_dataset).groupby(
        ["family", "sparsity", "on_proxy"]).gap.mean().unstack()
    d = (per[True] - per[False]).dropna().to_numpy()
    if len(d) < 2:
        return None
    iv = claims.mean_interval(d)
    return {"effect": iv.effect, "ci_low": iv.ci_low, "ci_high": iv.ci_high, "n": iv.n}


def reliability(cfg: Config, runs: pd.DataFrame, method: str = "ilm") -> pd.DataFrame:
    """Reliability bins of pooled test predictions per model kind: the dense model, the
    sparse models at their highest sparsity, and the quantized ones, over the targets, budgets
    and seeds they share (``method`` units only)."""
    chosen = runs[runs.method == method]
    sparse = chosen[chosen.compression == "sparse"]
    shared = set(map(tuple, sparse[["target", "shots", "seed"]].to_numpy())) if len(sparse) else None
    top = sparse.sparsity.max() if len(sparse) else None
    groups_ = {"dense": chosen[chosen.compression == "dense"],
               f"sparse {round(100 * top)}%" if top is not None else "sparse": sparse[sparse.sparsity == top],
               "quantized": chosen[chosen.compression == "quantized"]}
    frames = []
    for name, rows in groups_.items():
        if shared is not None:
            rows = rows[[tuple(r) in shared for r in rows[["target", "shots", "seed"]].to_numpy()]]
        if rows.empty:
            continue
        saved = [load_probabilities(cfg, r) for r in rows.to_dict("records")]
        probs, labels = torch.cat([s[0] for s in saved]), torch.cat([s[1] for s in saved])
        probs = probs / probs.sum(1, keepdim=True)
        bins = metrics.reliability_bins(probs, labels, cfg.ece_bins)
        frames.append(bins.assign(model=name, units=len(rows),
                                  ece=metrics.expected_calibration_error(probs, labels, cfg.ece_bins)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Results:
    """Tidy frames of one run of notebook 01."""

    sources: pd.DataFrame  # SOURCE_KEY + model, agreement, stubs, conv_sparsity, build time
    layers: pd.DataFrame  # per-layer sparsity of every sparse model
    runs: pd.DataFrame  # UNIT_KEY + model + metrics, one row per unit
    pairs: pd.DataFrame  # compressed units beside their dense unit: gap, ece_diff
    claims: pd.DataFrame  # claims.csv
    domain: dict[str, float] | None  # LP-gap bias on the proxy dataset (domain_check)
    test_images: dict[str, int]
    proxy: ProxySplit
    cpu_seconds: dict[str, float]


def run(cfg: Config, progress: bool = True) -> Results:
    """Everything notebook 01 shows; units resume from ``runs.csv``, models from the cache."""
    clock = {"start": time.process_time()}
    seed_everything(cfg.seed)
    split = proxy_split(cfg)
    targets = target_sets(cfg, split)
    sources = make_sources(cfg, split, progress)
    clock["models"] = time.process_time()
    measured = measure_sources(cfg, sources, split, progress)
    layers = layer_table(sources)
    if len(layers):
        atomic_write_text(cfg.results_dir / "layer_sparsity.csv", layers.to_csv(index=False))
    clock["checks"] = time.process_time()
    runs = run_sweep(cfg, sources, Images(targets), units(cfg, sources), progress)
    clock["sweep"] = time.process_time()
    decided = decide(cfg, runs)
    claims.write_claims(cfg.results_dir, decided)
    frame = claims.read_claims(cfg.results_dir)
    p = pairs(runs)
    # the units' own CPU time (in workers, or in this process with workers=0), in place of this
    # process's time during the sweep, which with workers=0 would count the units twice
    transfer = float(runs.cpu_seconds.sum())
    cpu = {"models": clock["models"] - clock["start"], "source checks": clock["checks"] - clock["models"],
           "transfer": transfer,
           "total": clock["checks"] - clock["start"] + transfer + time.process_time() - clock["sweep"]}
    return Results(measured, layers, runs, p, frame, domain_check(cfg, p),
                   {t: len(test) for t, (_, test) in targets.items()}, split, cpu)


# ----------------------------------------------------------------------------- figures


def sources_figure(sources: pd.DataFrame):
    """Top-1 agreement with the dense model and stub images right against conv sparsity, per
    family, beside the dense model's level (dashed): how much of the source distillation keeps."""
    sparse = sources[sources.compression == "sparse"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    sns.lineplot(data=sparse, x="sparsity", y="agreement_top1", hue="family", marker="o", ax=axes[0])
    sns.lineplot(data=sparse, x="sparsity", y="stubs_correct", hue="family", marker="o", ax=axes[1],
                 legend=False)
    for ax, column in zip(axes, ["agreement_top1", "stubs_correct"]):
        ax.axhline(float(sources.loc[sources.compression == "dense", column].iloc[0]), color="k", ls="--", lw=1)
    axes[0].set(ylabel="top-1 agreement with dense", xlabel="conv sparsity")
    axes[1].set(ylabel="stub images right (of 16)", xlabel="conv sparsity")
    return fig


def gap_budget_figure(sparse_pairs: pd.DataFrame, shots: Sequence[int]):
    """Dense − sparse accuracy against images per class, one panel per sparse family and a line
    per method (mean, 95 % t-interval): whether the cost of sparsity shrinks with data."""
    by_budget = interval_frame(sparse_pairs, ["family", "method", "shots"], "gap")
    fig, axes = plt.subplots(1, by_budget.family.nunique(), figsize=(2.6 * by_budget.family.nunique(), 3),
                             sharey=True, squeeze=False)
    for ax, (family, frame) in zip(axes[0], by_budget.groupby("family", sort=False)):
        for method, part in frame.groupby("method"):
            ax.errorbar(part.shots, part["mean"], yerr=[part["mean"] - part.ci_low, part.ci_high - part["mean"]],
                        marker="o", capsize=3, label=method.upper())
        ax.axhline(0, color="k", lw=1)
        ax.set(title=family, xscale="log", xlabel="images per class")
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.minorticks_off()
    axes[0][0].set_ylabel("dense − sparse (points)")
    axes[0][-1].legend(fontsize=8)
    return fig


def gap_sparsity_figure(sparse_pairs: pd.DataFrame):
    """Dense − sparse accuracy against conv sparsity, one panel per method and a line per family
    (95 % CI), with the zero line: whether the cost of sparsity grows with sparsity."""
    grid = sns.relplot(data=sparse_pairs, x="sparsity", y="gap", hue="family", col="method", kind="line",
                       marker="o", errorbar=("ci", 95), height=3, aspect=1.1)
    for ax in grid.axes.flat:
        ax.axhline(0, color="k", lw=1)
    grid.set_axis_labels("conv sparsity", "dense − sparse (points)")
    return grid.figure


def reliability_figure(bins: pd.DataFrame, n_bins: int):
    """Reliability diagram of each model kind in ``bins`` (from :func:`reliability`), titled
    with its ECE: whether compression leaves VP predictions over- or under-confident."""
    kinds = list(dict.fromkeys(bins.model))
    fig, axes = plt.subplots(1, len(kinds), figsize=(3.2 * len(kinds), 3.2), squeeze=False)
    for ax, name in zip(axes[0], kinds):
        part = bins[bins.model == name]
        ax.bar(part.bin_lower, part.accuracy.fillna(0), width=1 / n_bins, align="edge",
               edgecolor="k", alpha=0.7)
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set(title=f"{name} · ECE {100 * part.ece.iloc[0]:.1f}", xlabel="confidence",
               ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    return fig

"""Tests of the datasets: real sets through the asset layer, synthetic targets, few-shot
sampling, disjoint partitions, loaders and the $DATA_ROOT readers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from compstudy import data, paths
from compstudy.errors import ConfigError


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """Send the dataset cache of a test to its own temporary folder."""
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path / "artifacts")
    return tmp_path / "artifacts" / "datasets"


def _rows(ds: data.ImageSet) -> set[bytes]:
    return {bytes(img) for img in ds.images.reshape(len(ds), -1).numpy()}


@pytest.mark.parametrize("name", data.SYNTHETIC)
def test_synthetic_is_deterministic_across_cache_miss_and_hit(name, cache_dir):
    first = data.load_dataset(name, "train", per_class=3, seed=7)
    [path] = cache_dir.glob("*.pt")
    assert not list(cache_dir.glob("*.tmp"))
    hit = data.load_dataset(name, "train", per_class=3, seed=7)
    path.unlink()
    regenerated = data.load_dataset(name, "train", per_class=3, seed=7)
    for other in (hit, regenerated):
        assert torch.equal(first.images, other.images) and torch.equal(first.labels, other.labels)
        assert other.classes == first.classes and other.name == name
    other_seed = data.load_dataset(name, "train", per_class=3, seed=8)
    assert not torch.equal(first.images, other_seed.images)


@pytest.mark.parametrize("name, n_classes", [("near", 10), ("middle", 10), ("far", 10)])
def test_synthetic_shapes_balance_and_disjoint_splits(name, n_classes):
    train = data.load_dataset(name, "train", per_class=4, seed=0)
    test = data.load_dataset(name, "test", per_class=2, seed=0)
    for ds, k in ((train, 4), (test, 2)):
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (k * n_classes, 3, 32, 32)
        assert ds.labels.dtype == torch.int64 and len(ds) == k * n_classes
        assert len(ds.classes) == n_classes == len(set(ds.classes))
        assert torch.equal(ds.class_counts(), torch.full((n_classes,), k))
        # not degenerate: every image has contrast, the set spans the value range
        assert (ds.images.float().std(dim=(1, 2, 3)) > 5).all()
        assert ds.images.min() < 40 and ds.images.max() > 215
        assert not torch.equal(ds.labels, torch.sort(ds.labels).values)  # classes interleaved
    assert len(_rows(train)) == len(train)
    assert not _rows(train) & _rows(test)


def test_digits_split_is_stratified_and_complete():
    train, test = data.load_dataset("digits", "train"), data.load_dataset("digits", "test")
    assert len(train) + len(test) == 1797 and len(test) == 540
    assert train.classes == test.classes == tuple(str(d) for d in range(10))
    for ds in (train, test):
        assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (1, 8, 8)  # native size
        assert ds.images.max() == 255 and ds.images.min() == 0
    total = train.class_counts() + test.class_counts()
    assert ((test.class_counts() - 0.3 * total).abs() <= 1).all()  # stratified 70/30
    assert torch.equal(data.load_dataset("digits", "test", seed=3).images, test.images)


def test_imageset_subset_and_counts():
    ds = data.load_dataset("near", "train", per_class=3)
    sub = ds.subset([0, 5, 7])
    assert len(sub) == 3 and sub.classes == ds.classes and sub.name == ds.name
    assert torch.equal(sub.images[1], ds.images[5]) and sub.labels[2] == ds.labels[7]
    assert sub.class_counts().sum() == 3 and len(sub.class_counts()) == 10


# -------------------------------------------------------------------------------- few-shot
LABELS = torch.tensor([0] * 7 + [1] * 5 + [2] * 9)[torch.randperm(21, generator=torch.Generator().manual_seed(1))]


@pytest.mark.parametrize("n", [1, 3, 5])
def test_few_shot_indices_are_exact_and_seeded(n):
    idx = data.few_shot_indices(LABELS, n, seed=4)
    assert len(idx) == 3 * n and len(set(idx.tolist())) == len(idx)
    assert torch.equal(idx, idx.sort().values) and 0 <= idx.min() and idx.max() < len(LABELS)
    assert torch.equal(torch.bincount(LABELS[idx], minlength=3), torch.full((3,), n))
    assert torch.equal(idx, data.few_shot_indices(LABELS, n, seed=4))


def test_few_shot_seeds_differ_and_shots_nest():
    a = [set(data.few_shot_indices(LABELS, 2, seed=s).tolist()) for s in range(5)]
    assert len({frozenset(x) for x in a}) > 1
    small, big = (set(data.few_shot_indices(LABELS, n, seed=9).tolist()) for n in (2, 4))
    assert small < big


def test_few_shot_all_and_bad_requests():
    assert torch.equal(data.few_shot_indices(LABELS, -1, seed=0), torch.arange(len(LABELS)))
    for bad in (0, -2):
        with pytest.raises(ConfigError, match="n_shot"):
            data.few_shot_indices(LABELS, bad, seed=0)
    with pytest.raises(ConfigError, match=r"n_shot=6 exceeds the 5 images of class '1'"):
        data.few_shot_indices(LABELS, 6, seed=0)


def test_few_shot_on_an_imageset_names_class_and_dataset():
    ds = data.load_dataset("far", "train", per_class=3)
    shot = data.few_shot(ds, 2, seed=0)
    assert torch.equal(shot.class_counts(), torch.full((10,), 2))
    assert data.few_shot(ds, -1, seed=0).images.shape == ds.images.shape
    with pytest.raises(ConfigError, match=r"n_shot=4 exceeds the 3 images of class 'A' in far"):
        data.few_shot(ds, 4, seed=0)


# ------------------------------------------------------------------------------ bad input
def test_unknown_dataset_and_split():
    with pytest.raises(ConfigError, match=r"unknown dataset 'imagenet'; valid choices: cifar10, .*near, .*cifar100"):
        data.load_dataset("imagenet", "train", per_class=2)
    with pytest.raises(ConfigError, match=r"unknown split 'val'; valid choices: train, test"):
        data.load_dataset("near", "val", per_class=2)
    with pytest.raises(ConfigError, match="per_class"):
        data.load_dataset("near", "train")
    assert set(data.dataset_names()) == set(data.REAL) | set(data.SYNTHETIC) | set(data.TORCHVISION_DATASETS)
    assert data.check_dataset_name("cifar10") == "cifar10"
    with pytest.raises(ConfigError, match="unknown dataset 'Near'"):
        data.check_dataset_name("Near")


@pytest.mark.parametrize("name", list(data.TORCHVISION_DATASETS))
def test_missing_real_dataset_names_data_root_and_layout(name, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DATA_ROOT", str(empty))
    with pytest.raises(ConfigError) as err:
        data.load_dataset(name, "train")
    msg = str(err.value)
    layout = data.TORCHVISION_DATASETS[name].layout.format(split="train")
    assert "\n" not in msg and repr(name) in msg
    assert f"DATA_ROOT={empty}" in msg and f"$DATA_ROOT/{name}/{layout}" in msg
    assert not any(empty.iterdir())  # nothing created while looking


def _write_cifar10(root, per_batch=4):
    """Write CIFAR-10 in its real python-pickle layout; returns the expected train/test arrays."""
    folder = root / "cifar10_png" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    written = {"train": [], "test": []}
    for i, fname in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / fname, "wb") as f:
            pickle.dump({b"batch_label": fname.encode(), b"data": x, b"labels": y, b"filenames": []}, f)
        written["test" if fname == "test_batch" else "train"].append((x, y))
    return {k: (np.concatenate([x for x, _ in v]), sum((y for _, y in v), [])) for k, v in written.items()}


def test_original_cifar10_in_its_torchvision_layout_loads(tmp_path, monkeypatch, cache_dir):
    expected = _write_cifar10(tmp_path / "data")
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    for split, n in (("train", 20), ("test", 4)):
        ds = data.load_dataset("cifar10_png", split)
        x, y = expected[split]
        assert ds.name == "cifar10_png" and len(ds) == n and ds.classes[0] == "airplane" and len(ds.classes) == 10
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (n, 3, 32, 32)
        assert torch.equal(ds.images.reshape(n, -1), torch.from_numpy(x))
        assert ds.labels.tolist() == y
        again = data.load_dataset("cifar10_png", split)  # from the cache
        assert torch.equal(again.images, ds.images) and torch.equal(again.labels, ds.labels)


def test_unsplit_torchvision_set_is_resized_and_split(tmp_path, monkeypatch, cache_dir):
    """EuroSAT (an ImageFolder, shipped unsplit) goes through the generic torchvision reader."""
    from PIL import Image

    root = tmp_path / "data" / "eurosat" / "eurosat" / "2750"
    for c, cls in enumerate(("Forest", "River", "SeaLake")):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (64, 64), (80 * c, 10 * i, 200)).save(root / cls / f"{cls}_{i}.png")
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "data"))
    train, test = data.load_dataset("eurosat", "train"), data.load_dataset("eurosat", "test")
    assert train.classes == ("Forest", "River", "SeaLake")
    assert train.images.shape == (21, 3, 128, 128) and len(test) == 9
    assert torch.equal(test.class_counts(), torch.full((3,), 3))
    assert not _rows(train) & _rows(test)
    assert (train.images[:, 2] == 200).all()  # resized pixels kept, red channel encodes the class
    assert torch.equal(train.images[:, 0, 0, 0] // 80, train.labels.to(torch.uint8))


# --------------------------------------------------------------------------------- loader
def test_loader_yields_float_batches_covering_the_set():
    ds = data.load_dataset("middle", "train", per_class=5)
    loader = data.make_loader(ds, batch_size=16, shuffle=True, seed=3)
    batches = list(loader)
    assert len(loader) == 4
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    x = torch.cat([b[0] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (50, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    labels = torch.cat([b[1] for b in batches])
    assert torch.equal(labels.sort().values, ds.labels.sort().values)
    # every batch image is an image of the set, in a seeded order
    assert any(torch.equal(batches[0][0][0], data.to_float(img[None])[0]) for img in ds.images)
    again = torch.cat([b[0] for b in data.make_loader(ds, 16, shuffle=True, seed=3)])
    assert torch.equal(x, again)
    plain = torch.cat([b[0] for b in data.make_loader(ds, 16, shuffle=False)])
    assert torch.equal(plain, data.to_float(ds.images))
    assert len(list(data.make_loader(ds, 16, shuffle=False, drop_last=True))) == 3


def test_augmentation_keeps_shapes_and_is_seeded():
    ds = data.load_dataset("far", "train", per_class=4)
    plain = torch.cat([x for x, _ in data.make_loader(ds, 8, shuffle=False)])
    aug = torch.cat([x for x, _ in data.make_loader(ds, 8, shuffle=False, augment=True, seed=1)])
    again = torch.cat([x for x, _ in data.make_loader(ds, 8, shuffle=False, augment=True, seed=1)])
    other = torch.cat([x for x, _ in data.make_loader(ds, 8, shuffle=False, augment=True, seed=2)])
    assert aug.shape == plain.shape and aug.dtype == torch.float32
    assert torch.equal(aug, again) and not torch.equal(aug, other) and not torch.equal(aug, plain)
    # each augmented image is a 32x32 crop of the zero-padded (black) image, maybe flipped
    padded = torch.nn.functional.pad(plain, (4, 4, 4, 4))
    for a, p in zip(aug, padded):
        crops = [q[:, i:i + 32, j:j + 32] for q in (p, p.flip(-1)) for i in range(9) for j in range(9)]
        assert any(torch.equal(a, c) for c in crops)


def test_grey_images_become_three_equal_channels():
    digits = data.load_dataset("digits", "test")
    x = data.to_float(digits.images[:5])
    assert x.shape == (5, 3, 8, 8) and torch.equal(x[:, 0], x[:, 2])
    assert torch.equal(x[:, 0], digits.images[:5, 0].float() / 255)


# ------------------------------------------------------------------------- real, offline
@pytest.mark.parametrize("name, sizes, shape", [
    ("cifar10", (50000, 10000), (3, 32, 32)),
    ("fashion_mnist", (60000, 10000), (1, 28, 28)),
    ("mnist", (3500, 1500), (1, 28, 28)),
])
def test_real_sets_have_their_sizes_balance_and_native_shape(name, sizes, shape):
    for split, n in zip(data.SPLITS, sizes):
        ds = data.load_dataset(name, split)
        assert len(ds) == n and ds.images.shape[1:] == shape and len(ds.classes) == 10
        assert torch.equal(ds.class_counts(), torch.full((10,), n // 10))
        assert ds.images.float().std() > 30  # real images, not blanks


def test_cifar10_classes_and_jpeg_content():
    test = data.load_dataset("cifar10", "test")
    assert test.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                            "ship", "truck")
    means = test.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(means, torch.tensor([0.491, 0.482, 0.447]), atol=0.01)  # the mirror's means


def test_mnist_split_is_disjoint_and_seeded():
    train, test = data.load_dataset("mnist", "train"), data.load_dataset("mnist", "test")
    assert not _rows(train) & _rows(test)
    assert torch.equal(data.load_dataset("mnist", "test").images, test.images)


# ------------------------------------------------------------------------------ partitions
def test_partition_parts_are_disjoint_sized_and_stable():
    ds = data.load_dataset("near", "train", per_class=12, seed=0)
    parts = data.partition(ds, {"proxy": 5, "fewshot": 3, "rest": -1}, seed=2)
    assert [len(p) for p in parts.values()] == [50, 30, 40]
    ids = [set(p.ids.tolist()) for p in parts.values()]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert set().union(*ids) == set(ds.ids.tolist())
    assert all(torch.equal(p.class_counts(), torch.full((10,), n)) for p, n in zip(parts.values(), (5, 3, 4)))
    smaller = data.partition(ds, {"proxy": 5, "fewshot": 1}, seed=2)  # later sizes leave earlier parts alone
    assert torch.equal(smaller["proxy"].ids, parts["proxy"].ids)
    with pytest.raises(ConfigError, match="need 13 images per class"):
        data.partition(ds, {"a": 6, "b": 7}, seed=0)
    with pytest.raises(ConfigError, match="at most one part"):
        data.partition(ds, {"a": -1, "b": -1}, seed=0)


def test_subsets_keep_ids_into_the_full_split():
    ds = data.load_dataset("far", "train", per_class=3)
    sub = data.few_shot(ds, 1, seed=0).subset([2, 0])
    assert torch.equal(ds.images[sub.ids], sub.images)

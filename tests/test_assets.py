"""The asset layer: every manifest entry resolves and verifies; bad copies and absences are refused."""

import gzip
import shutil
import zipfile

import pytest

from compstudy import assets, paths
from compstudy.errors import ConfigError


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "ARTIFACTS_DIR", tmp_path / "artifacts")
    return tmp_path / "artifacts"


def test_every_asset_resolves_offline_and_verifies(artifacts, monkeypatch):
    monkeypatch.setenv("COMPSTUDY_OFFLINE", "1")
    for name, asset in assets.MANIFEST.items():
        path = assets.fetch(name)
        assert path.exists() and assets.actual_digest(asset, path) == asset.sha256, name
        assert asset.url.startswith("http") and asset.licence and asset.citation
    assert not artifacts.exists(), "mirror copies are read in place, nothing is copied"


def test_a_truncated_mirror_file_is_refused_with_both_digests(tmp_path, monkeypatch):
    asset = assets.MANIFEST["cifar10_resnet20"]
    mirror = tmp_path / "mirror"
    copy = mirror / asset.mirror_path
    copy.parent.mkdir(parents=True)
    copy.write_bytes(assets.fetch("cifar10_resnet20").read_bytes()[:-100])
    monkeypatch.setenv("COMPSTUDY_MIRROR", str(mirror))
    with pytest.raises(assets.AssetError) as error:
        assets.fetch("cifar10_resnet20")
    message = str(error.value)
    assert asset.sha256 in message and assets.actual_digest(asset, copy) in message
    assert "\n" not in message


def test_an_altered_image_of_a_folder_asset_is_refused(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(assets.fetch("imagenet_stubs"), mirror / "imagenet-stubs")
    (mirror / "imagenet-stubs" / "koala.jpg").chmod(0o644)
    with open(mirror / "imagenet-stubs" / "koala.jpg", "ab") as handle:
        handle.write(b"\0")
    monkeypatch.setenv("COMPSTUDY_MIRROR", str(mirror))
    with pytest.raises(assets.AssetError, match="corrupt or altered"):
        assets.fetch("imagenet_stubs")


def test_a_repacked_archive_verifies_by_its_content(tmp_path):
    """GitHub archives hold the same files under another top folder and compression."""
    original = assets.fetch("deit_tiny_mat")
    repacked = tmp_path / "archive.zip"
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(repacked, "w", zipfile.ZIP_STORED) as target:
        for info in reversed(source.infolist()):
            target.writestr(f"matlab-bit_true-deit_tiny-fix-80f2a91/{info.filename}", source.read(info))
    asset = assets.MANIFEST["deit_tiny_mat"]
    assert assets.actual_digest(asset, repacked) != asset.sha256
    assert assets.verify(asset, repacked) == repacked


def test_a_recompressed_gzip_verifies_by_its_content_and_a_changed_one_does_not(tmp_path):
    asset = assets.MANIFEST["fashion_mnist_t10k_labels"]
    content = gzip.decompress(assets.fetch(asset.name).read_bytes())
    same = tmp_path / "same.gz"
    same.write_bytes(gzip.compress(content, compresslevel=1, mtime=0))
    assert assets.verify(asset, same) == same
    changed = tmp_path / "changed.gz"
    changed.write_bytes(gzip.compress(content[:-1] + b"\x07", mtime=0))
    with pytest.raises(assets.AssetError, match=asset.content_digest):
        assets.verify(asset, changed)


def test_a_missing_asset_offline_names_the_mirror_variable_and_the_url(tmp_path, monkeypatch, artifacts):
    monkeypatch.setenv("COMPSTUDY_MIRROR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("COMPSTUDY_OFFLINE", "1")
    with pytest.raises(assets.AssetError) as error:
        assets.fetch("cifar10_jpeg")
    message = str(error.value)
    assert "\n" not in message and "COMPSTUDY_MIRROR" in message
    assert assets.MANIFEST["cifar10_jpeg"].url in message and "'cifar10_jpeg'" in message


def test_the_cache_comes_before_the_mirror(artifacts, monkeypatch):
    asset = assets.MANIFEST["cifar10_resnet20"]
    cached = assets.cache_location(asset)
    cached.parent.mkdir(parents=True)
    shutil.copy(assets.fetch(asset.name), cached)
    assert assets.fetch(asset.name) == cached
    monkeypatch.setenv("COMPSTUDY_MIRROR", "/nonexistent")
    assert assets.fetch(asset.name) == cached


def test_unknown_asset_lists_the_manifest():
    with pytest.raises(ConfigError, match="unknown asset 'imagenet'; valid choices: efficientnet_lite0"):
        assets.fetch("imagenet")

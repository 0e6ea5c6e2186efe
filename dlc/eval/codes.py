"""Code quality: linear probe and k-NN accuracy of one-hot codes against the encoder's continuous
features, code usage, and how close sampled codes are to real ones."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import CodeError


def batched(fn, images: torch.Tensor, batch_size: int = 256, progress: str | None = None) -> torch.Tensor:
    """``fn`` (e.g. ``encoder.encode`` or ``encoder.features``) over ``images`` in batches, on CPU."""
    from ..progress import tqdm

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


def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, classes: int | None = None,
                     weight_decays=(1e-5, 1e-4, 1e-3), steps: int = 200) -> tuple[torch.nn.Linear, float]:
    """Multinomial logistic regression (L-BFGS) of ``train_y`` on ``train_x``, its L2 weight chosen on a
    held-out 10% of the rows, then refit on all of them. Returns the probe and the chosen weight."""
    classes = classes or int(train_y.max()) + 1
    held = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(0))
    val, fit_rows = held[: len(held) // 10], held[len(held) // 10:]
    scores = {wd: _accuracy(_fit_logistic(train_x[fit_rows], train_y[fit_rows], classes, wd, steps), train_x[val], train_y[val])
              for wd in weight_decays}
    best = max(scores, key=scores.get)
    return _fit_logistic(train_x, train_y, classes, best, steps), best


def _accuracy(model: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 weight_decays=(1e-5, 1e-4, 1e-3), steps: int = 200, standardize: bool = True) -> dict:
    """The test accuracy of ``fit_linear_probe``. Features are standardised with the training
    statistics (``standardize``: continuous features; one-hot codes are used as they are). Returns
    test accuracy and the chosen weight decay."""
    if standardize:
        mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    model, weight_decay = fit_linear_probe(train_x, train_y, classes, weight_decays, steps)
    return {"accuracy": _accuracy(model, test_x, test_y), "weight_decay": weight_decay}


class CodeProbes:
    """Linear probes reading factors from one-hot codes, fitted on real images' codes: they judge codes
    a model wrote (the text model's, a composition's) before any picture is drawn from them, so a
    factor lost there is told apart from one the DiT loses."""

    def __init__(self, codes: torch.Tensor, fields: dict[str, torch.Tensor], vocab_size: int):
        self.vocab_size = vocab_size
        x = one_hot(codes, vocab_size)
        self.probes = {f: fit_linear_probe(x, y)[0] for f, y in fields.items()}

    def predict(self, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each factor's most likely class index (N,) for codes (N, L)."""
        x = one_hot(torch.as_tensor(codes).long(), self.vocab_size)
        with torch.no_grad():
            return {f: probe(x).argmax(1) for f, probe in self.probes.items()}


def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 k: int = 20, temperature: float = 0.07, batch_size: int = 1024) -> float:
    """Weighted k-NN on cosine similarity (DINO's evaluation: votes weighted by exp(sim / T)).
    On one-hot codes the cosine similarity is the fraction of positions two codes share."""
    train_x, test_x = (torch.nn.functional.normalize(x.float(), dim=1) for x in (train_x, test_x))
    classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for s in range(0, len(test_x), batch_size):
        sims, idx = (test_x[s:s + batch_size] @ train_x.T).topk(min(k, len(train_x)), dim=1)
        votes = torch.zeros(len(idx), classes).scatter_add_(1, train_y[idx], (sims / temperature).exp())
        correct += (votes.argmax(1) == test_y[s:s + batch_size]).sum().item()
    return correct / len(test_x)


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


def evaluate_codes(encoder, train, test, batch_size: int = 256, k: int = 20, progress: bool = True,
                   factors=None) -> dict:
    """Code quality of ``encoder`` on labelled in-memory datasets (``.images`` uint8, ``.labels``):
    linear probe and k-NN accuracy of the one-hot codes and of the continuous features, and code
    usage on the training set. ``factors``: integer fields to probe as well (default: the factors
    the dataset declares, e.g. the glyphs' letter, colour, background and font); each gets
    ``out["factors"][name]`` with the codes' and the features' linear probe, their ratio, and
    chance (the test split's most common class)."""
    if train.labels is None or test.labels is None:
        raise CodeError("code evaluation needs labelled datasets (labels for the probe and k-NN)")
    factors = list(getattr(train, "factors", {}) if factors is None else factors)
    targets = {f: (factor_labels(train, f), factor_labels(test, f)) for f in factors}
    V = encoder.config.vocab_size
    out = {"factors": {f: {} for f in factors}} if factors else {}
    for name, fn in (("codes", encoder.encode), ("features", encoder.features)):
        x_train, x_test = (batched(fn, split.images, batch_size, f"{name} ({label})" if progress else None)
                           for split, label in ((train, "train"), (test, "test")))
        if name == "codes":
            out["usage"] = usage_stats(x_train, V, train.images)
            x_train, x_test = one_hot(x_train, V), one_hot(x_test, V)
        probe = linear_probe(x_train, train.labels, x_test, test.labels, standardize=name == "features")
        out[name] = {"linear_probe": probe["accuracy"],
                     "knn": knn_accuracy(x_train, train.labels, x_test, test.labels, k)}
        for f, (y_train, y_test) in targets.items():
            same = torch.equal(y_train, train.labels) and torch.equal(y_test, test.labels)  # the glyphs' letter
            out["factors"][f][name] = probe["accuracy"] if same else linear_probe(
                x_train, y_train, x_test, y_test, standardize=name == "features")["accuracy"]
    out["probe_ratio"] = out["codes"]["linear_probe"] / max(out["features"]["linear_probe"], 1e-12)
    for f, (_, y_test) in targets.items():
        scores = out["factors"][f]
        scores["ratio"] = scores["codes"] / max(scores["features"], 1e-12)
        scores["chance"] = torch.bincount(y_test).max().item() / len(y_test)
    return out


def factor_labels(dataset, factor: str) -> torch.Tensor:
    """The integer labels of one factor field of ``dataset`` (e.g. the glyphs' ``colour``)."""
    if factor not in getattr(dataset, "fields", {}):
        raise CodeError(f"the dataset has no factor {factor!r} to probe (its fields: {', '.join(dataset.fields) or 'none'})")
    return torch.as_tensor(dataset.fields[factor], dtype=torch.long)


def code_statistics(generated: torch.Tensor, real: torch.Tensor) -> dict:
    """How close sampled codes are to real ones, by statistics that need no density:

    - ``marginal_tv``: per-position value frequencies, total variation, averaged over positions;
    - ``pair_tv``: joint frequencies of neighbouring positions (i, i+1), total variation, averaged;
    - ``agreement_err``: the L x L matrix P(x_i == x_j), mean absolute difference;
    - ``unique``: fraction of distinct codes among the generated ones.
    Empirical TVs are biased up at small sample counts: compare against real-vs-real at the same
    counts (the noise floor).
    """
    V = int(max(generated.max(), real.max())) + 1
    L = generated.shape[1]
    pair_keys = [(c[:, :-1] * V + c[:, 1:]) for c in (generated, real)]
    return {
        "marginal_tv": float(np.mean([_tv(generated[:, i], real[:, i]) for i in range(L)])),
        "pair_tv": float(np.mean([_tv(pair_keys[0][:, i], pair_keys[1][:, i]) for i in range(L - 1)] or [0.0])),
        "agreement_err": (_agreement(generated) - _agreement(real)).abs().mean().item(),
        "unique": len(torch.unique(generated, dim=0)) / len(generated),
    }


def _tv(a: torch.Tensor, b: torch.Tensor) -> float:
    """Total variation between the empirical distributions of two 1-D integer samples."""
    values, inverse = torch.unique(torch.cat([a, b]), return_inverse=True)
    pa = torch.bincount(inverse[: len(a)], minlength=len(values)).double() / len(a)
    pb = torch.bincount(inverse[len(a):], minlength=len(values)).double() / len(b)
    return 0.5 * (pa - pb).abs().sum().item()


def _agreement(codes: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """P(x_i == x_j) over codes, (L, L)."""
    total = sum((c[:, :, None] == c[:, None, :]).double().sum(0) for c in codes.split(chunk))
    return total / len(codes)

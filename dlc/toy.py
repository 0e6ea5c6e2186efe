"""The paper's toy experiment (its Section 3): conditioning on a discrete latent turns one hard
distribution into many easy ones.

The data are 2-D mixtures of N isotropic Gaussians (variance 0.1 per axis) whose means lie on a
sqrt(N) x sqrt(N) grid of spacing 1.0. A small MLP diffusion model (flow matching) is trained three
ways on the same samples, with the same size and budget:

- ``unconditional``: p(x);
- ``oracle``: p(x | index), the index of the Gaussian each sample came from, embedded;
- ``gmm``: p(x | index) with the index a Gaussian mixture model (fitted by EM to the training samples,
  N components) assigns (its most probable component), the way a DLC is inferred by an encoder
  rather than given.

Conditioned models sample an index first (uniformly for the oracle, from the GMM's weights for the
GMM), then x given the index. Each model is scored by KL(data || model), estimated with a Gaussian
KDE fitted on its samples: mean over fresh data points x of log p_data(x) - log q_kde(x), with
p_data the known mixture density. The same estimator with fresh *data* samples in place of the
model's is the ``floor``: the KDE's own bias at this sample count (a perfect model scores it, not 0).
The bandwidth is the one of ``KDE_BANDWIDTHS`` that gives data its lowest KL against other data,
chosen on samples not used for the scores.

    from dlc.toy import ToyConfig, run
    results = run(ToyConfig(ns=(9, 121)), out="runs/toy")   # results.json, kl.png, samples.png

The default config (N = 9, 121, 400, 900, 3,000 steps per model) takes about 2 minutes on 2 idle
cores: each N runs on one thread, two side by side, so its numbers do not depend on the machine's cores.

The DiT's objectives in ``dlc.dit.diffusion`` work on image tensors with one random generator per
sample (diffusers schedulers); for tens of thousands of 2-D points this module has its own short
flow-matching loss and Euler sampler (the same path and velocity target as the DiT's ``flow``).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from torch import nn

from .config import NonNegativeInt, PositiveFloat, PositiveInt, Range, validated
from .errors import ConfigError
from .files import atomic_write

METHODS = ("unconditional", "gmm", "oracle")
LABELS = {"unconditional": "unconditional", "gmm": "GMM index", "oracle": "oracle index", "floor": "KDE floor (data)"}
KDE_BANDWIDTHS = (0.03, 0.04, 0.05, 0.07, 0.1, 0.14, 0.2, 0.28, 0.4)


@dataclass(frozen=True)
class ToyConfig:
    """The experiment's settings; ``run`` checks their ranges as ``dlc.config`` checks a YAML file's."""

    ns: tuple[PositiveInt, ...] = (9, 121, 400, 900)  # numbers of Gaussians: perfect squares
    spacing: PositiveFloat = 1.0  # distance between neighbouring means
    variance: PositiveFloat = 0.1  # of each Gaussian, per axis (std 0.316)
    train_size: PositiveInt = 50_000  # training samples (the models and the GMM see the same ones)
    width: PositiveInt = 128  # hidden units of the MLP
    depth: Annotated[int, Range(2)] = 4  # linear layers of the MLP (the paper: a 4-layer MLP)
    steps: PositiveInt = 3000  # training steps per model
    batch_size: PositiveInt = 512
    lr: PositiveFloat = 2e-3  # AdamW, cosine decay to 0
    sample_steps: PositiveInt = 64  # Euler steps of the sampler
    kde_samples: PositiveInt = 20_000  # samples the KDE is fitted on (per model, and for the floor)
    eval_samples: PositiveInt = 5_000  # data points the KL is averaged over
    gmm_iters: NonNegativeInt = 100  # EM iterations at most (after k-means++ and 10 k-means iterations)
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "ns", tuple(int(n) for n in self.ns))
        bad = [n for n in self.ns if n < 1 or math.isqrt(n) ** 2 != n]
        if bad:
            raise ConfigError(f"toy: N must be a perfect square (a sqrt(N) x sqrt(N) grid), got {bad}")


QUICK = ToyConfig(ns=(9, 121), train_size=5_000, steps=300, kde_samples=4_000, eval_samples=2_000, gmm_iters=30)


def _seed(*parts) -> int:
    """A seed from the config's seed and a name (stable across runs and Python versions)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "little")


def _generator(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*parts))


# ---- the data ------------------------------------------------------------------------------------


class GridMixture:
    """N isotropic Gaussians of ``variance`` per axis, equally weighted, means on a centred square
    grid of ``spacing``."""

    def __init__(self, n: int, spacing: float = 1.0, variance: float = 0.1):
        k = math.isqrt(n)
        if k * k != n:
            raise ConfigError(f"toy: N must be a perfect square, got {n}")
        coords = (torch.arange(k, dtype=torch.float64) - (k - 1) / 2) * spacing
        self.n, self.variance = n, variance
        self.means = torch.cartesian_prod(coords, coords)  # (n, 2), row-major over the grid
        # the std of one coordinate of the whole mixture: the model's data are divided by it
        self.scale = math.sqrt(spacing**2 * (k * k - 1) / 12 + variance)

    def sample(self, num: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``num`` points (float64, (num, 2)) and the index of the Gaussian each came from."""
        index = torch.randint(self.n, (num,), generator=generator)
        return self.sample_given(index, generator), index

    def sample_given(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(len(index), 2, generator=generator, dtype=torch.float64)
        return self.means[index] + math.sqrt(self.variance) * noise

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) of each row of ``x`` (nats), exactly."""
        x = x.double()
        sq = torch.cdist(x, self.means).pow(2)
        log_normal = -sq / (2 * self.variance) - math.log(2 * math.pi * self.variance)
        return torch.logsumexp(log_normal, dim=1) - math.log(self.n)


# ---- the KL estimate -----------------------------------------------------------------------------


def kde_log_prob(x: torch.Tensor, centres: torch.Tensor, bandwidths, chunk: int = 64) -> torch.Tensor:
    """log q(x) of a Gaussian KDE with one isotropic kernel of std h on each centre: (len(bandwidths),
    len(x)) for a sequence of bandwidths h, (len(x),) for one."""
    one = isinstance(bandwidths, (int, float))
    hs = [float(bandwidths)] if one else [float(h) for h in bandwidths]
    x, centres = x.double(), centres.double()
    centre_norms = centres.pow(2).sum(1)
    out = []
    for part in x.split(chunk):  # small chunks stay in cache
        sq = torch.addmm(centre_norms, part, centres.T, alpha=-2).add_(part.pow(2).sum(1, keepdim=True))
        nearest = sq.min(1, keepdim=True).values.clamp(min=0)
        excess = (sq - nearest).float()  # >= 0: the nearest centre's term is exp(0) = 1
        # terms are floored at exp(-80), 1e-35 of the nearest's (negligible): exp is slow where it underflows
        out.append(torch.stack([(excess * (-0.5 / h**2)).clamp_(min=-80).exp_().sum(1).double().log()
                                - nearest[:, 0] * (0.5 / h**2)
                                - math.log(len(centres) * 2 * math.pi * h**2) for h in hs]))
    out = torch.cat(out, dim=1)
    return out[0] if one else out


def kl_estimate(mixture: GridMixture, data: torch.Tensor, samples: torch.Tensor, bandwidths):
    """KL(data || model) in nats: mean over ``data`` of log p_data - log q_kde(samples); a float for
    one bandwidth, a list for several."""
    kl = (mixture.log_prob(data) - kde_log_prob(data, samples, bandwidths)).mean(dim=-1)
    return float(kl) if kl.dim() == 0 else kl.tolist()


def select_bandwidth(mixture: GridMixture, data: torch.Tensor, reference: torch.Tensor,
                     candidates=KDE_BANDWIDTHS) -> float:
    """The candidate bandwidth with the lowest KL of ``data`` against a KDE of other ``reference`` data."""
    scores = kl_estimate(mixture, data, reference, list(candidates))
    return candidates[min(range(len(candidates)), key=scores.__getitem__)]


# ---- a Gaussian mixture model fitted by EM ----------------------------------------------------------


@dataclass
class GMM:
    weights: torch.Tensor  # (K,)
    means: torch.Tensor  # (K, 2)
    variances: torch.Tensor  # (K, 2): diagonal covariances

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """(B, K): log weight_k + log N(x; mean_k, diag(variance_k))."""
        x, precision = x.double(), 1.0 / self.variances
        quadratic = torch.addmm((self.means.pow(2) * precision).sum(1), x, (self.means * precision).T, alpha=-2)
        quadratic += x.pow(2) @ precision.T
        return quadratic.mul_(-0.5).add_(torch.log(self.weights) - 0.5 * torch.log(2 * math.pi * self.variances).sum(1))

    def predict(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """The most probable component of each point."""
        return torch.cat([self.log_joint(part).argmax(1) for part in x.split(chunk)])

    @classmethod
    def from_sums(cls, mass: torch.Tensor, first: torch.Tensor, second: torch.Tensor, reg: float) -> GMM:
        """The M step: from each component's responsibility mass and weighted sums of x and x**2."""
        mass = mass.clamp(min=1e-10)
        means = first / mass[:, None]
        return cls(mass / mass.sum(), means, (second / mass[:, None] - means.pow(2)).clamp(min=0) + reg)


def _nearest(x: torch.Tensor, centres: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    norms = centres.pow(2).sum(1)
    return torch.cat([torch.addmm(norms, part, centres.T, alpha=-2).argmin(1) for part in x.split(chunk)])


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k initial centres, each drawn with probability proportional to its squared distance to the nearest chosen."""
    centres = [x[torch.randint(len(x), (1,), generator=generator)]]
    nearest = (x - centres[0]).pow(2).sum(1)
    for _ in range(k - 1):
        pick = torch.multinomial(nearest / nearest.sum(), 1, generator=generator)
        centres.append(x[pick])
        nearest = torch.minimum(nearest, (x - x[pick]).pow(2).sum(1))
    return torch.cat(centres)


def fit_gmm(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 100, tol: float = 1e-3,
            reg: float = 1e-6, chunk: int = 4096) -> GMM:
    """A k-component diagonal GMM as scikit-learn's GaussianMixture fits one: k-means (k-means++ and
    10 Lloyd iterations) for the start, then EM until the mean log-likelihood improves by less than ``tol``."""
    x = x.double()
    means = kmeans_plus_plus(x, k, generator)
    for _ in range(10):
        assign = _nearest(x, means)
        counts = torch.bincount(assign, minlength=k).double()
        sums = torch.zeros_like(means).index_add_(0, assign, x)
        means = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], means)
    assign = _nearest(x, means)
    zeros = torch.zeros_like(means)
    gmm = GMM.from_sums(torch.bincount(assign, minlength=k).double(), zeros.index_add(0, assign, x),
                        zeros.index_add(0, assign, x.pow(2)), reg)
    previous = -math.inf
    for _ in range(iters):
        mass, first, second, total = torch.zeros(k, dtype=torch.float64), zeros.clone(), zeros.clone(), 0.0
        for part in x.split(chunk):  # the E step, summing what the M step needs
            joint = gmm.log_joint(part)
            top = joint.max(1, keepdim=True).values
            resp = joint.sub_(top).clamp_(min=-80).exp_()  # (exp is slow where it underflows)
            norm = resp.sum(1, keepdim=True)
            resp /= norm
            total += float((top + norm.log()).sum())
            mass += resp.sum(0)
            first += resp.T @ part
            second += resp.T @ part.pow(2)
        gmm = GMM.from_sums(mass, first, second, reg)
        if total / len(x) - previous < tol:
            break
        previous = total / len(x)
    return gmm


def agreement(predicted: torch.Tensor, truth: torch.Tensor, k: int) -> float:
    """Fraction of points whose predicted component's most common true index is their own."""
    table = torch.zeros(k, k, dtype=torch.long).index_put_((predicted, truth), torch.ones_like(truth), accumulate=True)
    return float(table.max(1).values.sum()) / len(truth)


# ---- the diffusion model ---------------------------------------------------------------------------


class ToyDenoiser(nn.Module):
    """An MLP velocity field v(x_t, t[, index]): the input, the time (sinusoidal features) and the
    index (a learned embedding) are each mapped to the width and added, then ``depth - 2`` hidden
    layers and the output layer, with SiLU between."""

    def __init__(self, width: int = 128, depth: int = 4, num_classes: int = 0, time_features: int = 32):
        super().__init__()
        if depth < 2:
            raise ConfigError(f"toy: depth must be at least 2 (input and output layers), got {depth}")
        self.register_buffer("frequencies", torch.exp(torch.linspace(0, math.log(1000), time_features // 2)))
        self.input = nn.Linear(2, width)
        self.time = nn.Linear(time_features, width)
        self.condition = nn.Embedding(num_classes, width) if num_classes else None
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 2))
        self.output = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        angles = t[:, None] * self.frequencies[None]
        h = self.input(x) + self.time(torch.cat([angles.sin(), angles.cos()], dim=1))
        if self.condition is not None:
            h = h + self.condition(index)
        for layer in self.hidden:
            h = layer(nn.functional.silu(h))
        return self.output(nn.functional.silu(h))


def flow_loss(model: ToyDenoiser, x0: torch.Tensor, index, generator: torch.Generator) -> torch.Tensor:
    """Flow matching on x_t = (1 - t) x0 + t noise with velocity target noise - x0, t uniform."""
    t = torch.rand(len(x0), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    xt = (1 - t[:, None]) * x0 + t[:, None] * noise
    return (model(xt, t, index) - (noise - x0)).pow(2).mean()


@torch.no_grad()
def sample_flow(model: ToyDenoiser, num: int, steps: int, generator: torch.Generator, index=None,
                chunk: int = 8192) -> torch.Tensor:
    """Euler steps from noise (t=1) to data (t=0); model space."""
    out = []
    for start in range(0, num, chunk):
        x = torch.randn(min(chunk, num - start), 2, generator=generator)
        part = None if index is None else index[start:start + len(x)]
        for i in range(steps, 0, -1):
            t = torch.full((len(x),), i / steps)
            x = x - model(x, t, part) / steps
        out.append(x)
    return torch.cat(out)


def train_model(config: ToyConfig, x: torch.Tensor, index: torch.Tensor | None, num_classes: int, name: str,
                progress=None) -> tuple[ToyDenoiser, float]:
    """One model on model-space points ``x`` (and their indices); returns it and its last-100-step loss."""
    with torch.random.fork_rng():
        torch.manual_seed(_seed(config.seed, num_classes, name, "init"))
        model = ToyDenoiser(config.width, config.depth, num_classes if index is not None else 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps)))
    generator = _generator(config.seed, num_classes, name, "train")
    recent = collections.deque(maxlen=100)
    for _ in range(config.steps):
        batch = torch.randint(len(x), (config.batch_size,), generator=generator)
        loss = flow_loss(model, x[batch], None if index is None else index[batch], generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        recent.append(loss.item())
        if progress is not None:
            progress.update(1)
    return model.eval(), sum(recent) / len(recent)


# ---- the experiment ----------------------------------------------------------------------------


def run_one(config: ToyConfig, n: int, progress=None) -> tuple[dict, dict[str, np.ndarray]]:
    """The experiment at N=n: the row of results and the points of the scatter plots."""
    started, cpu_started = time.time(), time.process_time()
    mixture = GridMixture(n, config.spacing, config.variance)
    g = _generator(config.seed, n, "data")
    train_x, train_index = mixture.sample(config.train_size, g)
    eval_x, _ = mixture.sample(config.eval_samples, g)
    floor_x, _ = mixture.sample(config.kde_samples, g)
    select_eval, _ = mixture.sample(config.eval_samples, g)
    select_reference, _ = mixture.sample(config.kde_samples, g)
    bandwidth = select_bandwidth(mixture, select_eval, select_reference)

    gmm_started = time.time()
    gmm = fit_gmm(train_x, n, _generator(config.seed, n, "gmm"), iters=config.gmm_iters)
    gmm_index = gmm.predict(train_x)
    gmm_seconds = time.time() - gmm_started

    model_x = (train_x / mixture.scale).float()
    samples, losses = {}, {}
    for method in METHODS:
        if progress is not None:
            progress.set_postfix_str(f"N={n} {method}")
        index = {"unconditional": None, "oracle": train_index, "gmm": gmm_index}[method]
        model, losses[method] = train_model(config, model_x, index, n, method, progress)
        g = _generator(config.seed, n, method, "sample")
        if method == "oracle":  # the true weights: uniform
            sample_index = torch.randint(n, (config.kde_samples,), generator=g)
        elif method == "gmm":  # the fitted GMM's weights, as a prior over codes
            sample_index = torch.multinomial(gmm.weights, config.kde_samples, replacement=True, generator=g)
        else:
            sample_index = None
        samples[method] = sample_flow(model, config.kde_samples, config.sample_steps, g, sample_index).double() * mixture.scale

    kl = {method: kl_estimate(mixture, eval_x, samples[method], bandwidth) for method in METHODS}
    kl["floor"] = kl_estimate(mixture, eval_x, floor_x, bandwidth)
    row = {"n": n, "kl": {k: round(v, 4) for k, v in kl.items()}, "bandwidth": bandwidth,
           "gmm_agreement": round(agreement(gmm_index, train_index, n), 4), "gmm_seconds": round(gmm_seconds, 1),
           "final_loss": {k: round(v, 4) for k, v in losses.items()}, "seconds": round(time.time() - started, 1),
           "cpu_seconds": round(time.process_time() - cpu_started, 1)}  # on one thread: the time on an idle core
    points = {"data": floor_x.float().numpy(), **{m: samples[m].float().numpy() for m in METHODS}}
    return row, points


def fingerprint(config: ToyConfig) -> dict:
    """What a row depends on besides its N: a saved row with another fingerprint is not reused."""
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name != "ns"}


class _QueueProgress:
    """What ``run_one`` calls on a progress bar, sent from a worker process to the parent's bar."""

    def __init__(self, queue):
        self.queue, self.pending = queue, 0

    def update(self, n: int = 1) -> None:
        self.pending += n
        if self.pending >= 50:
            self.queue.put(self.pending)
            self.pending = 0

    def set_postfix_str(self, text: str) -> None:
        pass


_QUEUE = None


def _start_worker(queue) -> None:
    global _QUEUE
    _QUEUE = queue
    torch.set_num_threads(1)


def _work(config: ToyConfig, n: int):
    progress = _QueueProgress(_QUEUE)
    result = run_one(config, n, progress)
    _QUEUE.put(progress.pending)
    return result


def _load_saved(config: ToyConfig, out: Path, n: int):
    row_path, points_path = out / f"n{n}.json", out / f"n{n}.npz"
    if row_path.is_file() and points_path.is_file():
        stored = json.loads(row_path.read_text())
        if stored.get("config") == fingerprint(config):
            return stored["row"], dict(np.load(points_path))
    return None


def _save(config: ToyConfig, out: Path, n: int, row: dict, points: dict) -> None:
    with atomic_write(out / f"n{n}.npz") as partial:
        np.savez_compressed(partial, **points)
    with atomic_write(out / f"n{n}.json") as partial:
        partial.write_text(json.dumps({"config": fingerprint(config), "row": row}, indent=1))


def run(config: ToyConfig = ToyConfig(), out: str | Path = "runs/toy", progress: bool = True,
        fresh: bool = False, workers: int = 2) -> dict:
    """Run every N of ``config`` (reusing rows a previous run with the same settings saved in
    ``out``), write results.json, kl.png and samples.png, and return the results.

    Each N runs on one thread, in ``workers`` processes side by side (1: in this process), so the
    numbers are the same whatever the number of workers or cores."""
    from .progress import tqdm

    config = validated(config, where="")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    done = {} if fresh else {n: saved for n in config.ns if (saved := _load_saved(config, out, n))}
    reused = set(done)
    todo = sorted((n for n in config.ns if n not in done), reverse=True)  # the largest first: they take longest
    bar = tqdm(total=len(todo) * len(METHODS) * config.steps, desc="dlc toy", unit="step",
               disable=not progress or not todo)
    try:
        if workers <= 1 or len(todo) <= 1:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                for n in todo:
                    done[n] = run_one(config, n, bar)
                    _save(config, out, n, *done[n])
            finally:
                torch.set_num_threads(threads)
        else:
            done.update(_run_in_workers(config, out, todo, min(workers, len(todo)), bar))
    finally:
        bar.close()
    rows = [{**done[n][0], **({"reused": True} if n in reused else {})} for n in config.ns]
    points = {n: done[n][1] for n in config.ns}
    results = {"config": asdict(config), "rows": rows, "seconds": round(time.time() - started, 1),
               "kl_estimator": "mean over fresh data x of log p_data(x) - log q_kde(x), q_kde a Gaussian KDE "
                               "(bandwidth per row) on the model's samples; floor: the KDE on fresh data samples"}
    with atomic_write(out / "results.json") as partial:
        partial.write_text(json.dumps(results, indent=2) + "\n")
    plot_kl(rows, out / "kl.png")
    plot_samples(points, out / "samples.png", config.spacing)
    return results


def _run_in_workers(config: ToyConfig, out: Path, todo: list[int], workers: int, bar) -> dict:
    """``run_one`` for each N of ``todo`` in worker processes, saving each as it finishes."""
    import multiprocessing
    import queue as queues
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # not fork: torch's thread pool does not survive it
    steps = context.Queue()
    done = {}
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(steps,))
    try:
        pending = {pool.submit(_work, config, n): n for n in todo}
        while pending:
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            try:
                while True:
                    bar.update(steps.get_nowait())
            except queues.Empty:
                pass
            for future in finished:
                n = pending.pop(future)
                done[n] = future.result()
                _save(config, out, n, *done[n])
                bar.set_postfix_str(f"N={n} done")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return done


def table(results: dict) -> list[dict]:
    """One row per N: the three KLs, the floor and the GMM's agreement with the true index."""
    return [{"N": r["n"], **{LABELS[k]: r["kl"][k] for k in (*METHODS, "floor")},
             "GMM agreement": r["gmm_agreement"], "KDE bandwidth": r["bandwidth"]} for r in results["rows"]]


# ---- plots -----------------------------------------------------------------------------------------

COLOURS = {"unconditional": "tab:red", "gmm": "tab:blue", "oracle": "tab:green", "floor": "grey"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: str | Path) -> Path:
    """The figure as a PNG of at most 64 colours (a scatter of thousands of antialiased points is
    otherwise several times larger)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    Image.open(buffer).convert("RGB").quantize(64).save(path, optimize=True)
    return Path(path)


def plot_kl(rows: list[dict], path: str | Path) -> Path:
    """KL(data || model) against N (log x) for the three models and the KDE floor."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ns = [r["n"] for r in rows]
    for key in (*METHODS, "floor"):
        ax.plot(ns, [r["kl"][key] for r in rows], "--" if key == "floor" else "-", marker="o", ms=4,
                color=COLOURS[key], label=LABELS[key])
    ax.set_xscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("N (Gaussians in the mixture)")
    ax.set_ylabel("KL(data ‖ model), nats (KDE)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def plot_samples(points: dict[int, dict[str, np.ndarray]], path: str | Path, spacing: float = 1.0,
                 window: float = 2.5, most: int = 5_000) -> Path:
    """One row per N: data, then each model's samples, on the same axes: the whole grid, or for
    a large N its central ``2 window`` x ``2 window`` square (at most ``most`` points each); the
    Gaussians' means are marked."""
    plt = _pyplot()
    columns = ("data", *METHODS)
    titles = {"data": "data", **LABELS}
    fig, axes = plt.subplots(len(points), len(columns), figsize=(2.3 * len(columns), 2.45 * len(points)),
                             squeeze=False)
    for row, (n, sets) in zip(axes, points.items()):
        limit = min((math.isqrt(n) - 1) / 2 * spacing + 1.2, window)  # the grid's half-width and a margin
        means = GridMixture(n, spacing).means.numpy()
        means = means[(np.abs(means) <= limit).all(1)]
        for ax, name in zip(row, columns):
            xy = sets[name]
            xy = xy[(np.abs(xy) <= limit).all(1)][:most]
            ax.scatter(xy[:, 0], xy[:, 1], s=0.8, color="0.25", linewidths=0)
            ax.scatter(means[:, 0], means[:, 1], s=12, marker="+", color="tab:red", linewidths=0.6)
            ax.set_xlim(-limit, limit)
            ax.set_ylim(-limit, limit)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            view = "" if limit < window else f" (centre {2 * window:g}x{2 * window:g})"
            ax.set_title(f"{titles[name]}, N={n}{view}", fontsize=7)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def config_with(config: ToyConfig, **changes) -> ToyConfig:
    """``config`` with the changes that are not None."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})

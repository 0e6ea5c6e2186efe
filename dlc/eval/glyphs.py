"""Judges for glyph images, and the scores they give compositions and text prompts.

The judges are one small CNN with a head per factor (letter, colour, background, font), trained on
real glyphs and cached on disk after the first training. They judge generated images, not the
generative model, so they may see every colour x letter pair, the held-out ones included; they
never see the dataset's own images either: they train on a second rendering of the whole plan
(``JUDGE_SEED``: other fonts per combination, other jitter and shades), and their accuracy is
measured on the dataset's test split. Generated images are blurrier and noisier than renders, so
training adds random shifts, rescaling, blur and noise.

    judges = load_glyph_judges(32)            # trains once (about a minute on 2 cores), then cached
    judged = judges.predict(images)           # uint8 or [-1, 1] -> {"letter": LongTensor, ...}
    composition_scores(("K", "red"), ("S", "blue"), judges.names(judged))
    prompt_scores([("K", "red")] * len(images), judges.names(judged))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data.glyphs import FACTORS, cached_renders, glyph_dataset, glyph_plan, load_glyphs
from ..data.images import to_float
from ..data.memory import cache_dir
from ..errors import DataError
from ..files import atomic_write

JUDGE_SEED = 1      # the judges' own rendering of the plan: not the dataset's images
JUDGE_VERSION = 1   # bump when the network or its training changes: the cache file names it
JUDGE_EPOCHS = 10  # measured: letter 99.1%, colour and background 100% on the test split; 2.4 min, 1 core


class GlyphJudgeNet(nn.Module):
    """Three conv stages (16, 32, 64 channels: one, two and two 3x3 convs with batch norm and ReLU,
    then 2x pooling), global average pooling, one linear head per factor. Input: RGB in [-1, 1].
    About 0.15 s per training batch of 64 at 32 px on 2 CPU cores."""

    STAGES = ((16, 1), (32, 2), (64, 2))  # (channels, convs)

    def __init__(self, classes: dict[str, int]):
        super().__init__()
        layers, channels = [], 3
        for out, convs in self.STAGES:
            for _ in range(convs):
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.heads = nn.ModuleDict({factor: nn.Linear(channels, n) for factor, n in classes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        return {factor: head(h) for factor, head in self.heads.items()}


def degrade(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Training augmentation in [-1, 1]: a random shift (up to 8% of the side) and rescaling
    (0.85-1.1), a 3x3 blur on a third of the images, and Gaussian noise up to sigma 0.1."""
    n = len(x)

    def uniform(lo, hi, *shape):
        return torch.rand(n, *shape, generator=generator) * (hi - lo) + lo

    theta = torch.zeros(n, 2, 3)
    scale = uniform(0.85, 1.1)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = uniform(-0.16, 0.16, 2)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    blurred = nn.functional.avg_pool2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.where(uniform(0, 1, 1, 1, 1) < 1 / 3, blurred, x)
    return x + torch.randn(x.shape, generator=generator) * uniform(0, 0.1, 1, 1, 1)


def train_glyph_judges(size: int, epochs: int = JUDGE_EPOCHS, batch_size: int = 64, limit: int | None = None,
                       seed: int = 0) -> GlyphJudgeNet:
    """A ``GlyphJudgeNet`` trained on the judges' rendering of every glyph (``limit``: the first
    that many of a seeded shuffle, for quick tests), AdamW with a one-cycle schedule."""
    items, _ = glyph_plan(JUDGE_SEED)
    data = glyph_dataset(cached_renders(items, size, JUDGE_SEED, "glyph-judges"), items, channels=3)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rows = torch.randperm(len(data), generator=generator)[:limit]
    images = to_float(data.images[rows])
    labels = {f: torch.as_tensor(data.fields[f])[rows] for f in FACTORS}
    net = GlyphJudgeNet({f: len(names) for f, names in FACTORS.items()})
    steps = epochs * -(-len(rows) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(rows), generator=generator).split(batch_size):
            logits = net(degrade(images[batch], generator))
            loss = sum(nn.functional.cross_entropy(logits[f], labels[f][batch]) for f in FACTORS)
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return net.eval()


class GlyphJudges:
    """Trained judges at one image size: ``predict`` labels, ``names`` them, ``accuracy`` is what
    they scored on the dataset's real test split (per factor)."""

    def __init__(self, net: GlyphJudgeNet, size: int, accuracy: dict[str, float] | None = None):
        self.net, self.size, self.accuracy = net.eval(), size, accuracy or {}

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise DataError(f"judges take images (N, 1 or 3, H, W); got shape {tuple(images.shape)}")
        x = to_float(images) if images.dtype == torch.uint8 else images.float()
        x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.size, self.size):
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                          align_corners=False)
        return x.to(next(self.net.parameters()).device)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 512) -> dict[str, torch.Tensor]:
        """Softmax over each factor's classes, (N, classes), on CPU."""
        chunks = [self.net(self._inputs(images[s:s + batch_size])) for s in range(0, len(images), batch_size)]
        return {f: torch.cat([c[f] for c in chunks]).softmax(1).cpu() for f in FACTORS}

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """The judges' pooled features (N, 64) on CPU: what their heads read, an image space
        that owes nothing to Inception (the demo's KID (judges): ``dlc.eval.fidelity.kid_from_features``)."""
        return torch.cat([self.net.body(self._inputs(images[s:s + batch_size])).cpu()
                          for s in range(0, len(images), batch_size)])

    def predict(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each factor's most likely class index, (N,): images uint8 [0, 255] or float [-1, 1]."""
        return {f: p.argmax(1) for f, p in self.probabilities(images).items()}

    @staticmethod
    def names(judged: dict[str, torch.Tensor]) -> dict[str, list[str]]:
        """Class indices per factor -> class names ("K", "red", ...)."""
        return {f: [FACTORS[f][i] for i in labels.tolist()] for f, labels in judged.items()}


def judge_accuracy(judges: GlyphJudges, dataset) -> dict[str, float]:
    """Per factor, the share of ``dataset``'s images (with glyph factor fields) judged right."""
    judged = judges.predict(dataset.images)
    return {f: (judged[f] == torch.as_tensor(dataset.fields[f])).float().mean().item() for f in FACTORS}


def load_glyph_judges(size: int = 32, device: str | torch.device = "cpu") -> GlyphJudges:
    """The judges for ``size``-pixel glyphs: trained and measured on the test split the first time,
    then read from ``cache_dir()``."""
    path = cache_dir() / f"glyph-judges-{size}-v{JUDGE_VERSION}.pt"
    if path.exists():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        net = GlyphJudgeNet({f: len(names) for f, names in FACTORS.items()})
        net.load_state_dict(stored["state_dict"])
        return GlyphJudges(net.to(device), size, stored["accuracy"])
    judges = GlyphJudges(train_glyph_judges(size), size)
    judges.accuracy = judge_accuracy(judges, load_glyphs(size, "test"))
    with atomic_write(path) as partial:
        torch.save({"state_dict": judges.net.state_dict(), "accuracy": judges.accuracy, "size": size}, partial)
    judges.net.to(device)
    return judges


def _pairs(judged: dict[str, Sequence]) -> list[tuple]:
    letters, colours = (list(judged[f].tolist() if torch.is_tensor(judged[f]) else judged[f]) for f in ("letter", "colour"))
    if len(letters) != len(colours) or not letters:
        raise DataError(f"judged samples need as many letters as colours, at least one (got {len(letters)}, {len(colours)})")
    return list(zip(letters, colours))


def _share(pairs: list[tuple], accept) -> float:
    return sum(1 for p in pairs if accept(p)) / len(pairs)


def composition_scores(parent_a: tuple, parent_b: tuple, judged: dict[str, Sequence]) -> dict[str, float]:
    """Shares of composed samples, judged as (letter, colour), from parents (letter, colour) that
    differ in both: ``cross`` (the letter of one parent in the colour of the other), ``parent_a``
    and ``parent_b`` (a parent's own pair), and how often each parent's letter and colour appear.
    Labels may be names or indices, as long as parents and judged use the same."""
    (la, ca), (lb, cb) = parent_a, parent_b
    if la == lb or ca == cb:
        raise DataError(f"composition parents must differ in letter and colour; got {parent_a} and {parent_b}")
    pairs = _pairs(judged)
    return {
        "cross": _share(pairs, lambda p: p in {(la, cb), (lb, ca)}),
        "parent_a": _share(pairs, lambda p: p == (la, ca)),
        "parent_b": _share(pairs, lambda p: p == (lb, cb)),
        "letter_of_a": _share(pairs, lambda p: p[0] == la),
        "letter_of_b": _share(pairs, lambda p: p[0] == lb),
        "colour_of_a": _share(pairs, lambda p: p[1] == ca),
        "colour_of_b": _share(pairs, lambda p: p[1] == cb),
    }


def prompt_scores(targets: Sequence[tuple], judged: dict[str, Sequence]) -> dict:
    """Shares of images drawn for prompts, one (letter, colour) target per image, judged with the
    right letter and colour (``both``), the right letter, the right colour; ``per_prompt``: ``both``
    for each target."""
    pairs = _pairs(judged)
    if len(targets) != len(pairs):
        raise DataError(f"{len(targets)} prompt targets for {len(pairs)} judged images")
    hits = [(tuple(t), p) for t, p in zip(targets, pairs)]
    per_prompt = {}
    for target in dict.fromkeys(t for t, _ in hits):
        mine = [p for t, p in hits if t == target]
        per_prompt[target] = sum(p == target for p in mine) / len(mine)
    return {
        "both": sum(t == p for t, p in hits) / len(hits),
        "letter": sum(t[0] == p[0] for t, p in hits) / len(hits),
        "colour": sum(t[1] == p[1] for t, p in hits) / len(hits),
        "per_prompt": per_prompt,
    }

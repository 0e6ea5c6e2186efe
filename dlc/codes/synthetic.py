"""Synthetic code sources: structured codes to develop a stage with before an encoder exists.

Each is ``fn(num, code_length, vocab_size, seed, dataset)`` -> (N, L) long; with a ``dataset``
there is one code per image (row i = image i). ``synthetic:NAME`` in a config names one of
``SYNTHETIC``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

LN2 = math.log(2.0)


def random_codes(num: int, code_length: int, vocab_size: int, seed: int = 0, dataset=None) -> torch.Tensor:
    """A fixed uniform random code per image: a stand-in for a perfect encoder (nothing to learn
    from the image, everything from the code)."""
    num = len(dataset) if dataset is not None else num
    return torch.randint(0, vocab_size, (num, code_length), generator=torch.Generator().manual_seed(seed))


def markov_codes(num: int, code_length: int, vocab_size: int, seed: int = 0, dataset=None) -> torch.Tensor:
    """Codes from a fixed random first-order Markov chain (sparse Dirichlet(0.1) transitions): a
    source with long-range structure and a known entropy (``markov_entropy_bits``). With a
    ``dataset``, one code per image."""
    num = len(dataset) if dataset is not None else num
    start, trans = markov_source(vocab_size, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = [torch.multinomial(start.expand(num, -1), 1, generator=g)[:, 0]]
    for _ in range(code_length - 1):
        x.append(torch.multinomial(trans[x[-1]], 1, generator=g)[:, 0])
    return torch.stack(x, 1)


def markov_source(vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(start distribution (V,), transition matrix (V, V)) of ``markov_codes``."""
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.full(vocab_size, 0.5))
    trans = rng.dirichlet(np.full(vocab_size, 0.1), size=vocab_size)
    return torch.tensor(start), torch.tensor(trans)


def markov_entropy_bits(code_length: int, vocab_size: int, seed: int = 0) -> float:
    """The exact entropy of ``markov_codes`` in bits per token (the floor any model can reach)."""
    start, trans = markov_source(vocab_size, seed)

    def entropy(p):
        return -(p * torch.log2(p.clamp_min(1e-300))).sum(-1)

    marginal, total = start, entropy(start).item()
    for _ in range(code_length - 1):
        total += (marginal * entropy(trans)).sum().item()
        marginal = marginal @ trans
    return total / code_length


def markov_nll_bits(codes: torch.Tensor, vocab_size: int, seed: int = 0) -> float:
    """Mean -log2 p(code) / L under the true ``markov_codes`` source: a sample-quality score for a
    prior trained on it (real codes score ``markov_entropy_bits`` on average)."""
    start, trans = markov_source(vocab_size, seed)
    logp = start.log()[codes[:, 0]] + trans.log()[codes[:, :-1], codes[:, 1:]].sum(1)
    return (-logp.mean() / codes.shape[1] / LN2).item()


def emoji_colour_codes(num: int, code_length: int, vocab_size: int, seed: int = 0, dataset=None) -> torch.Tensor:
    """Codes read off the emoji training images: position i = the mean colour of patch i of an
    h x w grid (h w = L, h the largest divisor of L up to sqrt(L)), each channel quantised to
    V^(1/3) levels (L=32, V=64: 4x8 patches, 4 levels). Image-grounded, spatially correlated codes
    of any length; ``num`` and ``seed`` are unused (one code per image of ``dataset``, by default the
    emoji training split)."""
    from ..data import in_memory, load

    levels = round(vocab_size ** (1 / 3))
    if levels**3 != vocab_size:
        raise ConfigError(f"synthetic:emoji-colours needs V = levels^3 (8, 27, 64, 125, ...); got V={vocab_size}")
    h = max(d for d in range(1, int(code_length**0.5) + 1) if code_length % d == 0)
    dataset = dataset if dataset is not None else load("emoji", size=32, split="train")
    images = in_memory(dataset).images.float() / 255.0
    means = F.adaptive_avg_pool2d(images, (h, code_length // h))  # (N, 3, h, w)
    q = (means * levels).long().clamp_(max=levels - 1)
    return (q[:, 0] * levels * levels + q[:, 1] * levels + q[:, 2]).flatten(1)


def caption_codes(num: int, code_length: int, vocab_size: int, seed: int = 0, dataset=None) -> torch.Tensor:
    """Stand-in codes (N, L) with structure a caption can predict, for use before an encoder exists.

    The first 3/8 of the positions spell the emoji's subgroup label, the next 1/4 its mean colour
    (the non-white pixels, 4 levels per channel: skin tones differ here) through fixed random
    tables; the rest are random per image (what a caption cannot tell). A subgroup probe on these
    codes, and so prompt fidelity, is therefore measurable. One code per image of ``dataset``
    (labelled, RGB, in memory); ``num`` is unused.
    """
    from ..data import in_memory

    dataset = None if dataset is None else in_memory(dataset)
    if dataset is None or dataset.labels is None:
        raise ConfigError("synthetic:captions codes are read off a labelled dataset (emoji, fashion-mnist, an image "
                          "folder with class folders)")
    g = torch.Generator().manual_seed(seed)
    n_label, n_colour = 3 * code_length // 8, code_length // 4
    n_random = code_length - n_label - n_colour
    labels = torch.as_tensor(dataset.labels)
    label_table = torch.randint(0, vocab_size, (int(labels.max()) + 1, n_label), generator=g)
    colour_table = torch.randint(0, vocab_size, (64, n_colour), generator=g)
    images = dataset.images.float()
    ink = (images < 240).any(1, keepdim=True).float()  # (N,1,H,W): not the white background
    mean = (images * ink).sum((2, 3)) / ink.sum((2, 3)).clamp_min(1)  # (N, 3)
    levels = (mean / 64).long().clamp(0, 3)
    colour = levels[:, 0] * 16 + levels[:, 1] * 4 + levels[:, 2]
    rest = torch.randint(0, vocab_size, (len(labels), n_random), generator=g)
    return torch.cat([label_table[labels], colour_table[colour], rest], dim=1)


SYNTHETIC = {"random": random_codes, "markov": markov_codes, "emoji-colours": emoji_colour_codes,
             "captions": caption_codes}

"""Prompt fidelity of a trained text-to-code model, at the code level.

A subgroup probe (multinomial logistic regression on one-hot codes, fitted on the training codes)
reads the class out of generated codes: how often does a prompt's code decode to the prompted
emoji's subgroup? Reported for training prompts and for the held-out compositional prompts
(dlc/data/holdout.py), against the chance rate, the majority rate and uniformly random codes, with the
probe's accuracy on the real codes as the ceiling. With --pipeline and --encoder, the same prompts'
codes also go through the DiT, and a subgroup probe on the encoder's features of real images
classifies the generated images (against images from random codes). Diversity: the mean pairwise Hamming distance
(fraction of positions) between codes generated for the same prompt, and the fraction of distinct
codes. Identity: how often the prompted emoji's own code (its image in the training split) is among
the ``--k`` codes nearest (Hamming) to a generated one, against the next prompt's emoji (shuffled) and
chance (k / training images). The held-out prompts are mostly one subgroup (75% people in roles), so
the subgroup probe cannot tell a composed "woman firefighter" from any person: identity can.

    nice .venv/bin/python benchmarks/text_quality.py --run runs/emoji/text --out text_quality.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

import dlc  # noqa: F401  (torchvision fix)
from dlc import text
from dlc.config import load_config
from dlc.data.holdout import heldout_emoji
from dlc.text import training as text_training
from dlc.text.model import REMASKING


def fit_probe(codes: torch.Tensor, labels: torch.Tensor, vocab: int, classes: int, steps: int = 300):
    """Logistic regression on one-hot codes (L*V features): codes (N, L) -> logits (N, classes)."""
    torch.manual_seed(0)
    L = codes.shape[1]
    probe = torch.nn.Linear(L * vocab, classes)
    features = F.one_hot(codes, vocab).flatten(1).float()
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-5)
    for _ in range(steps):
        loss = F.cross_entropy(probe(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return lambda c: probe(F.one_hot(c, vocab).flatten(1).float()).argmax(-1)


def accuracy(predict, codes: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((predict(codes) == labels).float().mean())


def diversity(codes: torch.Tensor, per_prompt: int) -> dict:
    groups = codes.view(-1, per_prompt, codes.shape[1])
    distance = (groups[:, :, None] != groups[:, None]).float().mean(-1)  # (P, k, k)
    pairs = per_prompt * (per_prompt - 1)
    return {"hamming": float(distance.sum((1, 2)).div(pairs).mean()),
            "distinct": float(sum(len({tuple(r) for r in g.tolist()}) for g in groups) / codes.shape[0])}


def image_fidelity(args, data, prompts_codes: dict, labels_of: dict, V: int) -> dict:
    """Images from generated codes (and from random codes) through the DLC pipeline, classified by
    a subgroup probe on the encoder's continuous features of the real training images."""
    import numpy as np

    from dlc.data import to_float
    from dlc.encoder import DLCEncoder

    pipe = dlc.DLCPipeline.from_pretrained(args.pipeline)
    encoder = DLCEncoder.from_pretrained(args.encoder).eval()

    def features(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([encoder.features(to_float(images[i:i + 128])) for i in range(0, len(images), 128)])

    probe = torch.nn.Linear(features(data.images[:1]).shape[1], data.num_classes)
    real, labels = features(data.images), torch.as_tensor(data.labels)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(300):
        loss = F.cross_entropy(probe(real), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = {"probe_on_real_train_images": float((probe(real).argmax(-1) == labels).float().mean())}
    g = torch.Generator().manual_seed(1)
    for split, codes in prompts_codes.items():
        for name, c in (("generated", codes), ("random_codes", torch.randint(0, V, codes.shape, generator=g))):
            pil = pipe(codes=c, num_inference_steps=args.dit_steps, guidance_scale=args.dit_guidance).images
            images = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in pil])).permute(0, 3, 1, 2)
            with torch.no_grad():
                hits = probe(features(images)).argmax(-1) == labels_of[split]
            out[f"{split}_image_probe_acc_{name}"] = float(hits.float().mean())
    return out


def identity_hits(generated: torch.Tensor, codes: torch.Tensor, rows: torch.Tensor, k: int) -> float:
    """Share of generated codes whose prompted image's code ``codes[rows[i]]`` is among the ``k``
    nearest training codes (Hamming distance; ties broken towards the target)."""
    distance = (generated[:, None] != codes[None]).sum(-1)  # (G, N)
    own = distance.gather(1, rows[:, None])  # (G, 1)
    return float(((distance < own).sum(1) < k).float().mean())


def _shuffled(targets: torch.Tensor, per_prompt: int) -> torch.Tensor:
    """Each prompt's codes paired with the next prompt's class."""
    return targets.view(-1, per_prompt).roll(1, 0).flatten()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/emoji/text", help="a trained text run directory")
    parser.add_argument("--train-prompts", type=int, default=200, help="training captions to prompt with")
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="generation steps (default L)")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--remasking", default="low_confidence", choices=sorted(REMASKING))
    parser.add_argument("--guidance-scale", type=float, default=0.0)
    parser.add_argument("--pipeline", help="a DLC pipeline run (DiT) for image-level fidelity (optional)")
    parser.add_argument("--encoder", help="the encoder (model folder) whose features the image probe uses")
    parser.add_argument("--dit-steps", type=int, default=50)
    parser.add_argument("--dit-guidance", type=float, default=1.0)
    parser.add_argument("--k", type=int, default=10, help="identity: nearest codes searched (default: %(default)s)")
    parser.add_argument("--out", default="text_quality.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    config = load_config(text_training.TextRunConfig, f"{args.run}/config.yaml")
    model = text.load_text_model(args.run)
    pairs, L, V, _ = text_training.training_pairs(config)
    data, codes = pairs.dataset, pairs.codes
    labels = torch.as_tensor(data.labels)
    probe = fit_probe(codes, labels, V, data.num_classes)

    everything = config.data.load("all")
    label_of = dict(zip(everything.captions, everything.labels.tolist()))
    g = torch.Generator().manual_seed(0)
    train_rows = [pairs.indices[i] for i in torch.randperm(len(pairs.indices), generator=g)[: args.train_prompts]]
    _, held_captions = heldout_emoji(everything)
    prompts = {"train": [data.captions[i] for i in train_rows], "heldout": held_captions}
    row_of = {c: i for i, c in enumerate(data.captions) if c}  # a caption's image in the training split

    sample = dict(steps=args.steps, temperature=args.temperature, remasking=args.remasking,
                  guidance_scale=args.guidance_scale)
    result = {"run": args.run, "L": L, "V": V, "classes": data.num_classes, "per_prompt": args.per_prompt, **sample,
              "chance": 1 / data.num_classes, "majority": float(labels.bincount().max() / len(labels)),
              "probe_on_real_train_codes": accuracy(probe, codes, labels)}
    generated_codes, targets_of = {}, {}
    for split, captions in prompts.items():
        targets = torch.tensor([label_of[c] for c in captions]).repeat_interleave(args.per_prompt)
        started = time.time()
        generated = model.generate(captions, args.per_prompt, seed=0, **sample)
        seconds = time.time() - started
        generated_codes[split], targets_of[split] = generated, targets
        random_codes = torch.randint(0, V, generated.shape, generator=g)
        result[split] = {"prompts": len(captions), "probe_acc_generated": accuracy(probe, generated, targets),
                         "probe_acc_random_codes": accuracy(probe, random_codes, targets),
                         # prompt-blind baselines: the split's majority-class rate, and codes scored
                         # against another prompt's class (a model that ignores prompts scores this)
                         "majority_rate": float((targets == labels.bincount().argmax()).float().mean()),
                         "probe_acc_shuffled_prompts": accuracy(probe, generated, _shuffled(targets, args.per_prompt)),
                         "seconds_per_code": seconds / len(generated), **diversity(generated, args.per_prompt)}
        known = [j for j, c in enumerate(captions) if c in row_of]  # prompts whose image has a training code
        rows = torch.tensor([row_of[captions[j]] for j in known]).repeat_interleave(args.per_prompt)
        mine = torch.cat([generated.view(len(captions), args.per_prompt, -1)[j] for j in known])
        result[split]["identity"] = {
            "k": args.k, "prompts": len(known), "hit": identity_hits(mine, codes, rows, args.k),
            "hit_shuffled": identity_hits(mine, codes, _shuffled(rows, args.per_prompt), args.k),
            "chance": args.k / len(codes)}
        if split == "train":
            real = codes[torch.tensor(train_rows)].repeat_interleave(args.per_prompt, 0)
            result[split]["token_match_real"] = float((generated == real).float().mean())
    if args.pipeline and args.encoder:
        result["images"] = image_fidelity(args, data, generated_codes, targets_of, V)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{'prompts':<8} {'n':>4} {'probe acc':>9} {'shuffled':>8} {'random':>7} {'majority':>8} {'chance':>7} "
          f"{'hamming':>8} {'distinct':>8}")
    for split in prompts:
        r = result[split]
        print(f"{split:<8} {r['prompts']:>4} {r['probe_acc_generated']:>9.3f} {r['probe_acc_shuffled_prompts']:>8.3f} "
              f"{r['probe_acc_random_codes']:>7.3f} {r['majority_rate']:>8.3f} {result['chance']:>7.3f} "
              f"{r['hamming']:>8.3f} {r['distinct']:>8.3f}")
    for split in prompts:
        r = result[split]["identity"]
        print(f"{split:<8} identity: prompted emoji among the {r['k']} nearest codes {r['hit']:.3f} "
              f"(shuffled {r['hit_shuffled']:.3f}, chance {r['chance']:.4f}; {r['prompts']} prompts)")
    print(f"probe on real training codes: {result['probe_on_real_train_codes']:.3f}; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

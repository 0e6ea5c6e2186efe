"""Memory and time per image of the authors' released DLC512 models as `dlc convert` builds them,
with random weights (speed does not depend on the values): the DiT-XL/2 (32x32x4 latents), the
DINOv2 ViT-L/14 + SEM encoder, the SEDD-medium prior, and LLaDA-8B (approximated by a Llama of the
same sizes, timed at 1 and 2 of its 32 layers and extrapolated linearly in depth; LLaDA's own code
is not in this repository). Times are one network call, then multiplied by the paper's step counts.

    python benchmarks/converted_speed.py                 # CPU, 1 thread
    python benchmarks/converted_speed.py --threads 2 --out benchmarks/results/converted_speed_cpu.json
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from pathlib import Path

import torch

import dlc  # noqa: F401  (arms the torchvision fix before timm is imported)
from dlc.dit.model import DiT
from dlc.encoder import DLCEncoder
from dlc.prior import SEDDPrior

L, V = 512, 256
DIT_STEPS, SEDD_STEPS, LLADA_STEPS = 250, 4096, 512  # the paper's DDPM steps, SEDD steps, one code token per step


def seconds(fn, repeats: int) -> float:
    """Best of ``repeats`` timed calls after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def params_gb(model: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9


@torch.no_grad()
def dit(repeats: int) -> dict:
    model = DiT(image_size=32, in_channels=4, patch_size=2, hidden_size=1152, depth=28, num_heads=16,
                code_length=L, vocab_size=V, learn_sigma=True, pos_embed_column_first=True).eval()
    x, t = torch.randn(2, 4, 32, 32), torch.tensor([500.0, 500.0])
    codes, drop = torch.randint(0, V, (2, L)), torch.tensor([False, True])  # one image: code + null (guidance)
    step = seconds(lambda: model(x, t, codes, drop), repeats)
    return {"model": "DiT-XL/2 (DiTSEM)", "params_gb_fp32": round(params_gb(model), 2),
            "seconds_per_call": round(step, 2), "calls_per_image": DIT_STEPS,
            "seconds_per_image": round(step * DIT_STEPS, 1), "call": "one guided DDPM step of 1 image (batch 2)"}


@torch.no_grad()
def encoder(repeats: int) -> dict:
    model = DLCEncoder(backbone="vit_large_patch14_reg4_dinov2",
                       backbone_kwargs=dict(patch_size=14, embed_dim=1024, depth=24, num_heads=16, reg_tokens=4,
                                            mlp_ratio=4.0, init_values=1e-5),
                       image_size=224, input_size=256, code_length=L, vocab_size=V, use_mask_token=True,
                       sem_eps=1e-6).eval()
    images = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)
    step = seconds(lambda: model.encode(images), repeats)
    return {"model": "DINOv2 ViT-L/14 reg4 + SEM", "params_gb_fp32": round(params_gb(model), 2),
            "seconds_per_call": round(step, 2), "calls_per_image": 1, "seconds_per_image": round(step, 2),
            "call": "encode 1 image"}


@torch.no_grad()
def sedd(repeats: int) -> dict:
    model = SEDDPrior(code_length=L, vocab_size=V, hidden_size=1024, cond_dim=128, depth=24, num_heads=16).eval()
    x, sigma = torch.full((1, L), V), torch.tensor([1.0])
    step = seconds(lambda: model(x, sigma), repeats)
    return {"model": "SEDD-medium prior", "params_gb_fp32": round(params_gb(model), 2),
            "seconds_per_call": round(step, 2), "calls_per_image": SEDD_STEPS,
            "seconds_per_image": round(step * SEDD_STEPS, 0), "call": "one analytic step of 1 code"}


@torch.no_grad()
def llada(repeats: int, prompt_tokens: int = 16) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    def timed(layers: int) -> tuple[float, float]:
        config = LlamaConfig(vocab_size=126464, hidden_size=4096, intermediate_size=12288, num_hidden_layers=layers,
                             num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
        model = LlamaForCausalLM(config).eval()
        ids = torch.randint(0, 126464, (1, L + 1 + prompt_tokens))
        return seconds(lambda: model(input_ids=ids).logits, repeats), params_gb(model) / 2  # bf16 bytes

    one, gb1 = timed(1)
    gc.collect()
    two, gb2 = timed(2)
    per_layer, per_layer_gb = two - one, gb2 - gb1
    step = one + 31 * per_layer
    return {"model": "LLaDA-8B (Llama-sized stand-in, extrapolated from 1 and 2 of 32 layers)",
            "params_gb_bf16": round(gb1 + 31 * per_layer_gb, 1), "seconds_per_call": round(step, 1),
            "calls_per_image": LLADA_STEPS, "seconds_per_image": round(step * LLADA_STEPS, 0),
            "call": f"one step over {L} code + 1 + {prompt_tokens} prompt tokens"}


PARTS = {"dit": dit, "encoder": encoder, "sedd": sedd, "llada": llada}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per model (the best is kept)")
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--out", default="benchmarks/results/converted_speed_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.parts:
        rows.append(PARTS[name](args.repeats))
        gc.collect()
        r = rows[-1]
        print(f"{r['model']:<72} {r['seconds_per_call']:>8.2f} s/call x {r['calls_per_image']:>5} = "
              f"{r['seconds_per_image']:>9.1f} s/image", flush=True)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    result = {"command": " ".join(["benchmarks/converted_speed.py", *sys.argv[1:]]),
              "device": f"cpu, {torch.get_num_threads()} threads", "torch": torch.__version__,
              "peak_rss_gb": round(peak_gb, 1), "results": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"peak memory of the process {peak_gb:.1f} GB; wrote {out}")


if __name__ == "__main__":
    main()

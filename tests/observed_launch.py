"""Runs a training entry script exactly as a user launches it, while recording what each rank holds
(tests/test_distributed_entry.py): ``torchrun ... tests/observed_launch.py OUT train/dit.py ARGS``.

Only rank 0 writes the run directory, so to compare ranks this launcher wraps ``dlc.training.fit``
and writes, per rank, into OUT:

- ``init-<rank>.safetensors``: the model's parameters before training;
- ``model-<rank>.safetensors`` / ``ema-<rank>.safetensors``: what the rank holds after training;
- ``extra-<rank>.safetensors``: the stage's extra state (e.g. the DINO centre);
- ``batches-<rank>.json``: per step, the local batch size and a digest of the images it got.

Then it runs the script unchanged (``runpy``, as ``__main__``, with the script's own argv).
"""

import hashlib
import json
import os
import runpy
import sys
from pathlib import Path

from safetensors.torch import save_file

import dlc.training as training


def flat(state: dict, prefix: str = "") -> dict:
    return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def observe(out: Path) -> None:
    original_fit = training.fit

    def fit(run, cfg, model, dataset, loss_fn, **kwargs):
        rank = int(os.environ.get("RANK", "0"))
        save_file(flat(model.state_dict()), out / f"init-{rank}.safetensors")
        batches = []

        def observed_loss(net, batch, info):
            images = batch["image"].detach().cpu().contiguous()
            batches.append({"step": info.step, "size": len(images),
                            "digest": hashlib.sha1(images.numpy().tobytes()).hexdigest()})
            return loss_fn(net, batch, info)

        ema = original_fit(run, cfg, model, dataset, observed_loss, **kwargs)
        save_file(flat(model.state_dict()), out / f"model-{rank}.safetensors")
        save_file(flat(ema.state_dict()), out / f"ema-{rank}.safetensors")
        extra = {}
        for name, obj in (kwargs.get("extra_state") or {}).items():
            extra.update(flat(obj.state_dict(), f"{name}."))
        save_file(extra, out / f"extra-{rank}.safetensors")
        (out / f"batches-{rank}.json").write_text(json.dumps(batches))
        return ema

    training.fit = fit  # before the script imports the stage modules, which bind `fit` when imported


if __name__ == "__main__":
    out, script, *args = sys.argv[1:]
    observe(Path(out))
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")

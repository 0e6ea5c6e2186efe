"""Test-only observer for the entry-script scale-out tests (tests/test_distributed_entry.py).

Python imports ``sitecustomize`` at start-up from the first folder on its path that has one; the
tests put this folder on ``PYTHONPATH`` of the ``torchrun`` workers, so ``train/dit.py`` and
``train/encoder.py`` run unchanged, exactly as users launch them. When ``DLC_TEST_OBSERVE`` names a
folder, ``dlc.training.fit`` is wrapped (before the stage modules import it) to write, per rank:

- ``init-<rank>.safetensors``: the model's parameters before training;
- ``model-<rank>.safetensors`` / ``ema-<rank>.safetensors``: what the rank holds after training;
- ``extra-<rank>.safetensors``: the stage's extra state (e.g. the DINO centre);
- ``batches-<rank>.json``: per step, the local batch size and a digest of the images it got.

Only processes started by torchrun (``LOCAL_RANK`` set) observe, and only with ``DLC_TEST_OBSERVE``;
another ``sitecustomize`` further on the path still runs.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if os.path.abspath(entry or ".") == here:
            continue
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", [entry or "."])
        if spec is not None:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return


def _observe(out_dir: str) -> None:
    import hashlib
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    import dlc.training as training

    original_fit = training.fit
    out = Path(out_dir)

    def flat(state: dict, prefix: str = "") -> dict:
        return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in state.items()}

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

    training.fit = fit


_chain()
if os.environ.get("DLC_TEST_OBSERVE") and "LOCAL_RANK" in os.environ:  # torchrun's workers, not torchrun itself
    _observe(os.environ["DLC_TEST_OBSERVE"])

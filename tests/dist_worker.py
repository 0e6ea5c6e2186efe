"""Run by tests/test_distributed.py under torchrun: a few steps of dlc.training.fit in 2 processes."""

import json
import sys
from pathlib import Path

import torch

from dlc.runs import RunDir
from dlc.training import TrainConfig, fit, make_accelerator, seed_everything

sys.path.insert(0, str(Path(__file__).parent))
from test_runs import Points, TinyNet  # noqa: E402

out = Path(sys.argv[1])
steps = int(sys.argv[2])
accelerator = make_accelerator("no")
seen = []


def loss_fn(model, batch, info):
    seen.append(batch["index"].tolist())
    loss = (model(batch["x"]) - batch["y"]).pow(2).mean()
    return loss, {}


class Indexed(Points):
    def __getitem__(self, i):
        return {**super().__getitem__(i), "index": torch.tensor(i)}


seed_everything(accelerator.process_index)  # different init per rank: DDP must broadcast rank 0's
model = TinyNet()
cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-2, checkpoint_every=2, log_every=1)
fit(RunDir(out / "run"), cfg, model, Indexed(), loss_fn, accelerator=accelerator)
rank = accelerator.process_index
torch.save(model.state_dict(), out / f"params-{rank}.pt")
(out / f"seen-{rank}.json").write_text(json.dumps(seen))

"""Scale-out proof on CPU: 2 processes through torchrun + accelerate (gloo), as users launch on GPUs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from dlc.runs import RunDir

WORKER = Path(__file__).parent / "dist_worker.py"


def torchrun(*args, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", "29533", str(WORKER), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_processes_split_data_and_stay_in_sync(tmp_path):
    torchrun(tmp_path, 4)
    seen = [json.loads((tmp_path / f"seen-{r}.json").read_text()) for r in range(2)]
    for step in range(4):
        assert len(seen[0][step]) == len(seen[1][step]) == 4  # global batch 8 split in two
        assert not set(seen[0][step]) & set(seen[1][step])  # each rank sees different samples
    params = [torch.load(tmp_path / f"params-{r}.pt", weights_only=True) for r in range(2)]
    for name in params[0]:
        assert torch.equal(params[0][name], params[1][name]), name  # synchronised despite different inits
    assert RunDir(tmp_path / "run").checkpoint_steps() == [2, 4]


def test_two_process_checkpoint_resumes_in_one_process(tmp_path):
    torchrun(tmp_path, 2)
    torchrun(tmp_path, 4, nproc=1)  # same run directory, now one process: resumes from step 2
    run = RunDir(tmp_path / "run")
    assert run.checkpoint_steps() == [2, 4]
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3, 4]
    assert len(json.loads((tmp_path / "seen-0.json").read_text())) == 2  # only steps 3 and 4 ran

"""Train the prior stage: `python train/prior.py --config emoji key=value ...` (same as `dlc train prior`).

Under accelerate: `accelerate launch train/prior.py --config imagenet`; on CPU, `torchrun --nproc_per_node 2 train/prior.py ...`.
"""

from dlc.cli.train import script_main

raise SystemExit(script_main("prior"))

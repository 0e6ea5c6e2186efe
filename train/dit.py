"""Train the dit stage: `python train/dit.py --config emoji key=value ...` (same as `dlc train dit`).

Under accelerate: `accelerate launch train/dit.py --config imagenet`; on CPU, `torchrun --nproc_per_node 2 train/dit.py ...`.
"""

from dlc.cli.train import script_main

raise SystemExit(script_main("dit"))

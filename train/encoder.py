"""Train the encoder stage: `python train/encoder.py --config emoji key=value ...` (same as `dlc train encoder`).

Under accelerate: `accelerate launch train/encoder.py --config imagenet`; on CPU, `torchrun --nproc_per_node 2 train/encoder.py ...`.
"""

from dlc.cli.train import script_main

raise SystemExit(script_main("encoder"))

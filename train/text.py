"""Train the text stage: `python train/text.py --config emoji key=value ...` (same as `dlc train text`).

Under accelerate: `accelerate launch train/text.py --config imagenet`; on CPU, `torchrun --nproc_per_node 2 train/text.py ...`.
"""

from dlc.cli.train import script_main

raise SystemExit(script_main("text"))

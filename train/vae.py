"""Train the vae stage: `python train/vae.py --config emoji key=value ...` (same as `dlc train vae`).

A small AutoencoderKL on the dataset, for a DiT in latent space (`latent=runs/emoji/vae/model`).
"""

from dlc.cli.train import script_main

raise SystemExit(script_main("vae"))

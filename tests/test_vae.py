"""The dataset VAE stage: trains, measures its latent scale, and serves as a DiT latent space end to end."""

import torch
from diffusers import AutoencoderKL

from dlc.pipeline import DLCPipeline
from dlc.stages import STAGES

TINY = ["model.block_out_channels=[8, 16, 16]", "model.norm_num_groups=8", "train.batch_size=8",
        "train.warmup_steps=0", "train.log_every=1", "train.checkpoint_every=4", "train.sample_every=0"]


def test_vae_trains_and_becomes_the_dits_latent_space(tmp_path):
    stage = STAGES["vae"]
    config = stage.load_config("emoji", [f"run_dir={tmp_path / 'vae'}", "train.steps=4", *TINY])
    run = stage.train(config)
    rows = run.read_metrics()
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4] and rows[-1]["test_mse"] > 0
    vae = AutoencoderKL.from_pretrained(run.model_dir)
    latents = vae.encode(torch.zeros(2, 3, 32, 32)).latent_dist.mean
    assert latents.shape == (2, 4, 8, 8)  # two downsamplings: 32 -> 8
    assert vae.config.scaling_factor == rows[-1]["scaling_factor"] != 1.0
    assert (run.samples / "step-0000004.png").is_file()

    stage = STAGES["dit"]

    config = stage.load_config("emoji", [
        f"run_dir={tmp_path / 'dit'}", f"latent={run.model_dir}", "model.arch=DiT-N/1", "condition.kind=random",
        "condition.code_length=4", "condition.random_vocab=8", "train.steps=1", "train.batch_size=4",
        "train.sample_every=0", "sample.num=2", "sample.steps=2"])
    stage.train(config)
    pipe = DLCPipeline.from_pretrained(tmp_path / "dit")
    assert pipe.vae is not None and pipe.dit.config.image_size == 8 and pipe.dit.config.in_channels == 4
    images = pipe(codes=torch.zeros(2, 4, dtype=torch.long), num_inference_steps=2, output_type="uint8").images
    assert images.shape == (2, 3, 32, 32)

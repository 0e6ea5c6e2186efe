"""Sampling settings are data: the runs' ``sample:`` sections become the pipeline's saved settings,
which every call and every CLI verb uses unless told otherwise, and settings.json records them."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dlc.cli import main
from dlc.pipeline import DiTSampling, DLCPipeline, PriorSampling, Sampling
from dlc.prior import create_prior

L, V = 8, 16
DIT_SAMPLE = {"steps": 3, "guidance_scale": 2.5, "guidance_interval": [0.1, 0.9], "num": 2}
PRIOR_SAMPLE = {"steps": 5, "temperature": 0.9, "eta": 0.2, "window": [0.2, 0.6], "num": 4}
RUN_SETTINGS = Sampling(dit=DiTSampling(steps=3, guidance_scale=2.5, guidance_interval=(0.1, 0.9)),
                        prior=PriorSampling(steps=5, temperature=0.9, eta=0.2, window=(0.2, 0.6)))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A project root: a DiT trained one step and a random prior, each run with its own sample settings."""
    from dlc.stages import STAGES

    root = tmp_path_factory.mktemp("project")
    stage = STAGES["dit"]
    stage.train(stage.load_config("emoji", [
        "condition.kind=random", f"condition.code_length={L}", f"condition.random_vocab={V}", "model.arch=DiT-N/8",
        "train.steps=1", "train.batch_size=4", "train.sample_every=0", f"run_dir={root / 'dit'}",
        *(f"sample.{k}={json.dumps(v)}" for k, v in DIT_SAMPLE.items())]))
    torch.manual_seed(0)
    prior = create_prior("micro", code_length=L, vocab_size=V)
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0, 0.5)
    prior.save_pretrained(root / "prior" / "model")
    (root / "prior" / "config.yaml").write_text(yaml.safe_dump({"sample": PRIOR_SAMPLE}))
    return root


@pytest.fixture(scope="module")
def pipe(root):
    pipe = DLCPipeline.from_pretrained(root)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def draw(pipe, **kwargs):
    return pipe(num_images=2, generator=torch.Generator().manual_seed(0), output_type="uint8", **kwargs)


def test_a_pipeline_from_runs_samples_with_the_runs_sample_settings(pipe):
    assert pipe.sampling == RUN_SETTINGS
    default = draw(pipe)
    explicit = draw(pipe, num_inference_steps=3, guidance_scale=2.5, guidance_interval=(0.1, 0.9),
                    prior_sampling=PriorSampling(steps=5, temperature=0.9, eta=0.2, window=(0.2, 0.6)))
    assert torch.equal(default.codes, explicit.codes) and torch.equal(default.images, explicit.images)
    library_defaults = draw(pipe, num_inference_steps=50, guidance_scale=1.0, prior_sampling=PriorSampling())
    assert not torch.equal(default.images, library_defaults.images)  # the runs' settings are what drew


def test_a_keyword_overrides_one_setting_and_keeps_the_others(pipe):
    resolved = pipe.resolve_sampling(prior={"eta": 0.0}, dit={"guidance_scale": None})
    assert resolved.prior == PriorSampling(steps=5, temperature=0.9, eta=0.0, window=(0.2, 0.6))
    assert resolved.dit == RUN_SETTINGS.dit
    assert torch.equal(draw(pipe, prior_sampling={"eta": 0.0}).codes,
                       draw(pipe, prior_sampling=PriorSampling(steps=5, temperature=0.9, eta=0.0, window=(0.2, 0.6))).codes)
    assert pipe.resolve_sampling(dit={"guidance_channels": 0}).dit.guidance_channels is None  # 0: all channels


def test_sampling_settings_survive_save_pretrained_and_from_pretrained(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "model_index.json").read_text())["sampling"] == RUN_SETTINGS.to_dict()
    loaded = DLCPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.sampling == RUN_SETTINGS
    assert torch.equal(draw(loaded).images, draw(pipe).images)


def test_set_sampling_changes_the_saved_settings(root):
    pipe = DLCPipeline.from_pretrained(root)
    pipe.set_sampling(prior={"steps": 64}, dit=DiTSampling(steps=7))
    assert pipe.sampling.prior.steps == 64 and pipe.sampling.prior.eta == 0.2 and pipe.sampling.dit == DiTSampling(steps=7)


def read_pngs(folder):
    return torch.stack([torch.from_numpy(np.array(Image.open(f))) for f in sorted((folder / "images").glob("*.png"))])


def test_dlc_sample_with_no_flags_uses_the_runs_settings_and_records_them_all(root, pipe, tmp_path):
    assert main(["sample", str(root), "-n", "2", "--device", "cpu", "--out", str(tmp_path / "plain")]) == 0
    settings = json.loads((tmp_path / "plain" / "settings.json").read_text())
    assert settings["sampling"] == RUN_SETTINGS.to_dict()
    assert set(settings["sampling"]["dit"]) == {"sampler", "steps", "guidance_scale", "guidance_interval",
                                                "guidance_channels"}
    assert set(settings["sampling"]["prior"]) == {"steps", "temperature", "eta", "window"}
    assert set(settings["sampling"]["text"]) == {"steps", "temperature", "remasking", "guidance_scale"}
    assert torch.equal(read_pngs(tmp_path / "plain"), torch.stack(list(draw(pipe).images)).permute(0, 2, 3, 1))


def test_a_flag_overrides_one_setting_only(root, tmp_path):
    assert main(["sample", str(root), "-n", "2", "--device", "cpu", "--eta", "0", "--remask-window", "0.1", "0.5",
                 "--guidance-interval", "0", "1", "--out", str(tmp_path / "flags")]) == 0
    recorded = json.loads((tmp_path / "flags" / "settings.json").read_text())["sampling"]
    want = RUN_SETTINGS.to_dict()
    want["prior"].update(eta=0.0, window=[0.1, 0.5])
    want["dit"].update(guidance_interval=[0.0, 1.0])
    assert recorded == want


def test_help_says_unset_flags_take_the_saved_setting(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--prior-steps", "--eta", "--remask-window", "--guidance-interval", "--text-temperature"):
        assert flag in text
    assert text.count("the pipeline's saved setting") >= 12


def test_the_imagenet_presets_hold_the_papers_sampling_settings():
    from pathlib import Path

    import dlc
    from dlc.config import load_config
    from dlc.dit import DiTRunConfig
    from dlc.prior.training import PriorRunConfig

    presets = Path(dlc.__file__).parent / "configs" / "imagenet"
    dit = load_config(DiTRunConfig, presets / "dit_xl2_dlc512.yaml").sample
    prior = load_config(PriorRunConfig, presets / "prior_dlc512.yaml").sample
    assert (dit.sampler, dit.steps, dit.guidance_scale, tuple(dit.guidance_interval)) == ("ddpm", 250, 1.4, (0.0, 1.0))
    assert (prior.steps, prior.eta, tuple(prior.window)) == (4096, 0.01, (0.3, 0.55))


def test_samples_drawn_during_dit_training_use_every_sample_setting(tmp_path, monkeypatch):
    import dlc.dit.training as dit_training
    from dlc.stages import STAGES

    seen = []
    real_sample = dit_training.sample
    monkeypatch.setattr(dit_training, "sample", lambda *a, **kw: seen.append(kw) or real_sample(*a, **kw))
    stage = STAGES["dit"]
    stage.train(stage.load_config("emoji", [
        "condition.kind=random", f"condition.code_length={L}", f"condition.random_vocab={V}", "model.arch=DiT-N/8",
        "train.steps=1", "train.batch_size=4", "train.sample_every=1", f"run_dir={tmp_path / 'dit'}",
        *(f"sample.{k}={json.dumps(v)}" for k, v in DIT_SAMPLE.items())]))
    assert seen and all(kw["steps"] == 3 and kw["guidance_scale"] == 2.5 and kw["guidance_interval"] == (0.1, 0.9)
                        for kw in seen)

import subprocess
import sys

import pytest
from PIL import Image

from dlc.cli import build_parser, main


def _verbs():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "verb")
    return sorted(action.choices)


def test_every_verb_has_help(capsys):
    verbs = _verbs()
    assert {"data", "train"} <= set(verbs)
    for verb in verbs:
        with pytest.raises(SystemExit) as exit_info:
            main([verb, "--help"])
        assert exit_info.value.code == 0
        assert "usage: dlc " + verb in capsys.readouterr().out


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "dlc.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "data" in result.stdout


def test_data_preview_writes_a_labelled_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "emoji", "--out", str(out), "-n", "16", "--scale", "1"]) == 0
    image = Image.open(out)
    assert image.width > 8 * 32 and image.height > 2 * 32  # 8 columns, 2 rows, captions below
    assert "16 images" in capsys.readouterr().out


def test_data_list_reports_status(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "emoji" in out and "fashion-mnist" in out and "[ready]" in out


def test_data_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["data", "preview", f"imagefolder:{tmp_path}", "--out", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dlc data: error:") and "has no images" in err and "Traceback" not in err


def test_train_unknown_preset_lists_presets(capsys):
    assert main(["train", "dit", "--config", "no-such-preset"]) == 1
    assert "no config 'no-such-preset'" in capsys.readouterr().err


def test_data_shards(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(folder / f"{i}.png")
    assert main(["data", "shards", f"imagefolder:{folder}", "--out", str(tmp_path / "shards")]) == 0
    assert (tmp_path / "shards" / "shard-000000.tar").exists()


def test_print_config_shows_every_key_resolved_and_trains_nothing(tmp_path, capsys):
    import yaml

    from dlc.config import from_dict
    from dlc.dit import DiTRunConfig

    run_dir = tmp_path / "never"
    assert main(["train", "dit", "--config", "imagenet", "--print-config", f"run_dir={run_dir}", "train.lr=3e-4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    config = from_dict(DiTRunConfig, printed)  # every key is a valid one, and all of them are there
    assert config.train.lr == 3e-4 and config.model.arch == "DiT-XL/2" and config.run_dir == str(run_dir)
    assert set(printed["train"]) == set(DiTRunConfig().train.__dataclass_fields__)
    assert not run_dir.exists()


def test_version_is_the_installed_distributions(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"dlc {metadata.version('dlc')}\n"


def test_usage_errors_exit_2_and_failures_exit_1_as_the_help_says(tmp_path, capsys):
    for usage_error in (["no-such-verb"], ["sample", str(tmp_path), "--no-such-option"], ["train"],
                        ["train", "dit", "--config"], ["train", "dit", "not-a-key-value"]):
        with pytest.raises(SystemExit) as exit_info:
            main(usage_error)
        assert exit_info.value.code == 2, usage_error
    assert main(["train", "dit", "train.steps=many"]) == 1
    assert capsys.readouterr().err.strip().endswith("expected an integer, got 'many'")
    with pytest.raises(SystemExit):
        main(["--help"])
    epilog = " ".join(capsys.readouterr().out.split())
    assert "1 when the work failed" in epilog and "2 for a usage error" in epilog


def test_train_stage_help_lists_every_key_with_its_default_and_meaning(capsys):
    from dlc.cli.train import config_keys
    from dlc.config import to_dict
    from dlc.dit import DiTRunConfig

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "dit", "--help"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    keys = [line.split()[0] for line in lines if " = " in line]

    def leaves(data, prefix=""):
        for k, v in data.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]

    assert keys == list(leaves(to_dict(DiTRunConfig()))) == [k.key for k in config_keys(DiTRunConfig)]
    line = {ln.split()[0]: " ".join(ln.split()) for ln in lines if " = " in ln}
    assert line["train.steps"] == "train.steps = 1000"
    assert line["train.grad_clip"] == "train.grad_clip = 0.0 max gradient norm; 0 turns clipping off"
    assert line["objective"] == "objective = flow one of: flow, ddpm"
    assert line["condition.codes"] == "condition.codes = null kind=codes: the .npy for the training split"


def test_train_help_defaults_come_from_the_stages_own_factories(capsys):
    with pytest.raises(SystemExit):
        main(["train", "encoder", "--help"])
    out = capsys.readouterr().out
    assert "train.lr = 0.0005" in out and "train.weight_decay = 0.04" in out  # the encoder's TrainConfig(...)
    assert "crops: Multi-crop augmentation" in out  # a section's docstring heads its keys


@pytest.fixture(scope="module")
def tiny_flow_dit(tmp_path_factory):
    """A one-step flow DiT run on random 4-token codes, and codes for it."""
    import numpy as np

    root = tmp_path_factory.mktemp("errors")
    assert main(["train", "dit", "condition.kind=random", "condition.code_length=4", "condition.random_vocab=8",
                 "model.arch=DiT-N/8", "train.steps=1", "train.batch_size=2", "sample.num=1", "sample.steps=1",
                 f"run_dir={root / 'dit'}"]) == 0
    np.save(root / "codes.npy", np.zeros((2, 4), dtype=np.uint16))
    return root


def _one_line_error(capsys, verb: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"dlc {verb}: error: ")
    return last


def test_library_errors_a_user_can_trigger_are_one_line_with_status_1(tiny_flow_dit, capsys):
    import shutil

    run, codes = tiny_flow_dit / "dit", str(tiny_flow_dit / "codes.npy")
    sample = ["sample", "--codes", codes, "--steps", "1", "--out", str(tiny_flow_dit / "out")]
    assert main([*sample[:1], str(run), *sample[1:], "--sampler", "ddpm"]) == 1
    assert "'ddpm' does not fit the flow objective" in _one_line_error(capsys, "sample")
    assert main(["eval", "codes", "--run", str(run)]) == 1
    assert "holds a saved DiT, not a DLCEncoder" in _one_line_error(capsys, "eval")
    assert main(["eval", "codes", "--run", str(tiny_flow_dit / "no" / "such" / "run")]) == 1  # a typo, not a hub id
    assert "no/such/run does not exist: expected a run directory" in _one_line_error(capsys, "eval")
    damaged = tiny_flow_dit / "damaged"
    shutil.copytree(run, damaged)
    (damaged / "model" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    assert main([*sample[:1], str(damaged), *sample[1:]]) == 1
    assert "cannot load DiT from" in _one_line_error(capsys, "sample")
    (damaged / "model" / "config.json").write_text("{")
    assert main([*sample[:1], str(damaged), *sample[1:]]) == 1
    assert "config.json is damaged" in _one_line_error(capsys, "sample")
    assert main(["train", "dit", "condition.kind=random", "data.size=33", "model.arch=DiT-N/8",
                 f"run_dir={tiny_flow_dit / 'odd'}"]) == 1
    assert "image_size 33 must be a multiple of patch_size 8" in _one_line_error(capsys, "train")
    assert main(["train", "encoder", "model.backbone=resnet18", f"run_dir={tiny_flow_dit / 'enc'}"]) == 1
    assert "needs a timm VisionTransformer" in _one_line_error(capsys, "train")

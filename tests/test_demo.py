"""`dlc demo` end to end at a smoke budget: every stage runs, the report shows every picture and table,
and a re-run reuses the finished stages."""

import json
import re

import numpy as np
import pytest
import yaml

from dlc.cli import main
from dlc.demo import QUICK, Budget


def test_budget_scaling_touches_training_steps_only():
    doubled = Budget().scaled(2)
    assert doubled.dit_steps == 2 * Budget().dit_steps and doubled.encoder_steps == 2 * Budget().encoder_steps
    assert doubled.sample_steps == Budget().sample_steps and doubled.fid_samples == Budget().fid_samples
    assert QUICK.scaled(0.01).dit_steps == 1


def test_smoke_demo_writes_the_whole_report_and_reuses_stages(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--scale", "0.3", "--fid-samples", "8", "--out", str(out)]) == 0
    state = json.loads((out / "demo.json").read_text())
    assert list(state) == ["encoder", "codes", "vae", "dit", "prior+text", "samples", "evaluate", "toy", "report"]
    assert (out / "prior" / "model").is_dir() and (out / "text" / "model").is_dir()  # trained side by side

    html = (out / "report.html").read_text()
    pictures = re.findall(r'<img data-file="([^"]+)" src="data:image/png;base64,', html)  # embedded
    assert {"report/real.png", "report/reconstructions.png", "report/prior_samples.png", "report/compositions.png",
            "report/text_train.png", "report/text_heldout.png", "report/losses.png", "toy/kl.png",
            "toy/samples.png"} <= set(pictures)
    assert all((out / p).stat().st_size > 1000 for p in pictures)
    assert (out / "report.md").read_text().count("![") == len(pictures)

    rows = state["evaluate"]["result"]["fid"]
    assert [r["conditioning"] for r in rows] == ["DiT-N/1: DLC from the prior, CFG 3.0",
                                                 "DiT-N/1: DLC encoded from test images, CFG 3.0",
                                                 "real training emoji (floor at this sample count)"]
    assert all(r["FID"] > 0 and r["KID std"] >= 0 and r["samples"] == 8 for r in rows)
    assert len(list((out / "fid" / "prior").glob("*.png"))) == 8 and (out / "fid" / "encoded").is_dir()
    assert "DLC encoded from test images" in html and "<table>" in html and "conditioning table" not in html
    toy = state["toy"]["result"]  # the toy experiment, as `dlc toy` would run it
    assert [r["N"] for r in toy["table"]] == [9, 16] and toy["command"] == "dlc toy --quick --n 9 16 --steps 6"
    assert all(r["oracle index"] > 0 for r in toy["table"]) and "dlc toy --quick" in html

    capsys.readouterr()
    assert main(["demo", "--quick", "--scale", "0.3", "--fid-samples", "8", "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert log.count("reused") == 8 and "[9/9] report: starting" in log

    # --table on the finished demo adds the table stage alone: two DiTs trained as the main one, every row scored
    assert main(["demo", "--quick", "--scale", "0.3", "--fid-samples", "8", "--out", str(out), "--table"]) == 0
    log = capsys.readouterr().out
    assert log.count("reused") == 8 and "table: starting" in log and "evaluate: starting" not in log
    state = json.loads((out / "demo.json").read_text())
    assert state["evaluate"]["result"]["fid"] == rows  # the main DiT's scores stand
    table = state["table"]["result"]["rows"]
    assert [r["conditioning"] for r in table] == ["none (unconditional DiT)", "class label", "DLC from the prior",
                                                  "DLC encoded from test images",
                                                  "real training emoji (floor at this sample count)"]
    assert all(r["FID"] > 0 and r["samples"] == 8 and r["MSE to test image i"] > 0 for r in table)
    assert state["table"]["result"]["steps"] == 9  # the main DiT's steps (QUICK's 30, scaled by 0.3)
    main_dit, unconditional = (yaml.safe_load((out / run / "config.yaml").read_text()) for run in ("dit", "table/none"))
    for section in ("model", "sample"):
        assert main_dit[section] == unconditional[section]
    uncapped = {"keep_checkpoints": None, "time_limit_minutes": None}  # the table's rows: the steps, not the cap
    assert {**main_dit["train"], **uncapped} == {**unconditional["train"], **uncapped}
    assert unconditional["train"]["time_limit_minutes"] == 0
    assert unconditional["condition"]["kind"] == "none"
    assert table[0]["train"] == f"dlc train dit --config {out / 'table/none/config.yaml'}"
    assert table[0]["score"] == f"dlc fid {out / 'fid/table-none'} --reference emoji-32-test"
    html = (out / "report.html").read_text()
    assert "conditioning table" in html and "x the DLC-encoded one" in html


@pytest.mark.parametrize("table", [True, False])
def test_the_table_flag_adds_the_table_stage_to_the_whole_demo(tmp_path, table):
    from dlc.demo import Demo

    demo = Demo(str(tmp_path / "d"), quick=True, table=table)
    names = [name for name, _, _ in demo.stages()]
    assert ("table" in names) == table
    assert demo.models_trained() == "Encoder, VAE, DiT, prior and text model"  # the report's first line
    assert {"encoder", "dit", "samples", "toy", "report"} <= set(names)


def test_models_trained_side_by_side_report_which_failed(tmp_path):
    from dlc.demo import Demo
    from dlc.errors import ConfigError, DLCError

    demo = Demo(str(tmp_path / "d"), quick=True)
    missing = str(tmp_path / "missing.npy")  # valid settings that fail at run time, in the child
    bad = [("prior", "prior", 1, {"data.codes": missing}), ("text", "text", 1, {"codes.codes": missing})]
    with pytest.raises(DLCError, match=r"training failed: prior \(exit code 1\), text \(exit code 1\)"):
        demo._train_side_by_side(bad)
    # each child runs the config the demo built, saved beside the runs
    assert (tmp_path / "d" / "configs" / "prior.yaml").is_file()
    with pytest.raises(ConfigError, match="no_such"):  # a wrong key fails here, before any child starts
        demo._train_side_by_side([("prior", "prior", 1, {"no_such.key": 1})])


def test_demo_on_a_folder_without_captions_or_test_split_skips_text_and_says_what_stood_in(tmp_path):
    from PIL import Image

    from dlc.demo import Demo

    folder = tmp_path / "shapes"
    for name, rgb in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (folder / name).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (20, 20), tuple(min(255, c + 6 * i) for c in rgb)).save(folder / name / f"{i}.png")
    out = tmp_path / "demo"
    assert main(["demo", "--data", f"imagefolder:{folder}", "--quick", "--scale", "0.3", "--fid-samples", "8",
                 "--out", str(out)]) == 0
    state = json.loads((out / "demo.json").read_text())
    assert list(state) == ["encoder", "codes", "vae", "dit", "prior", "samples", "evaluate", "toy", "report"]
    assert not (out / "text").exists()  # no captions: no text model
    assert state["codes"]["result"]["codes"]["linear_probe"] >= 0  # labels from the class folders
    assert all(r["reference"] == "24 training images" for r in state["evaluate"]["result"]["fid"])
    html = (out / "report.html").read_text()
    assert "so these were seen in training" in html and "text_train.png" not in html
    assert f"dataset: imagefolder:{folder}" in (out / "encoder" / "config.yaml").read_text()
    assert f"dataset: imagefolder:{folder}" in (out / "dit" / "config.yaml").read_text()
    assert Demo(str(out), quick=True, dataset=f"imagefolder:{folder}").budget.dit_steps == round(
        QUICK.dit_steps * 0.25)  # 24 images: a quarter of the budgets


def test_glyph_demo_judges_compositions_and_prompts_by_letter_and_colour(tmp_path, monkeypatch):
    from dlc.eval import glyphs as judging

    quick = judging.GlyphJudges(judging.train_glyph_judges(32, epochs=1, limit=256), 32, {"letter": 0.5})
    monkeypatch.setattr(judging, "load_glyph_judges", lambda size, device="cpu": quick)
    out = tmp_path / "demo"
    assert main(["demo", "--data", "glyphs", "--quick", "--scale", "0.3", "--fid-samples", "8",
                 "--out", str(out)]) == 0
    state = json.loads((out / "demo.json").read_text())
    assert "judge" in state and "table" not in state
    judged = state["judge"]["result"]
    assert judged["parents"] == 8 and 0 <= judged["composition"]["cross"] <= 1
    assert judged["heldout_prompts"]["images"] == judged["train_prompts"]["images"] == 32
    assert judged["reconstructions"]["images"] == 64 and 0 <= judged["reconstructions"]["both"] <= 1
    # the composed and prompted codes are read too, by probes on the training codes: before the DiT draws them
    assert 0 <= judged["composed_codes"]["cross"] <= 1
    assert judged["heldout_prompt_codes"]["codes"] == judged["train_prompt_codes"]["codes"] == 32
    heldout = state["samples"]["result"]["heldout_prompts"]  # the held-out pairs' captions
    assert heldout and all(c.split(" on ")[0] in ("red K", "blue S", "green R", "purple E") for c in heldout)
    factors = state["codes"]["result"]["factors"]
    assert set(factors) == {"letter", "colour", "background", "font"}
    html = (out / "report.html").read_text()
    assert "Glyphs judged by their factors" in html and "letter probe from codes" in html
    assert "test images drawn from their codes: right letter and colour" in html
    assert "held-out prompts: right letter and colour, read from their codes by the probes" in html
    assert "{judged" not in html  # every sentence formatted
    assert "on glyphs (rendered letters)" in html
    # the glyph preset's encoder reads the FID network: every FID row has KID in the judges' features beside it
    assert all(np.isfinite(r["KID (judges)"]) for r in state["evaluate"]["result"]["fid"])
    assert "not independent judges" in html and "a frozen pretrained Inception-v3" in html
    # the benchmark judges the finished run again at other guidance scales; at the demo's own it agrees
    from test_benchmarks import load_benchmark

    rows = load_benchmark("glyph_judged", monkeypatch).main(
        ["--run", str(out), "--quick", "--guidance", "3", "--out", str(tmp_path / "judged.json")])["rows"]
    assert rows[0]["reconstructed both"] == judged["reconstructions"]["both"]  # same seeds, same sampler
    assert rows[0]["cross"] == judged["composition"]["cross"]
    assert rows[0]["codes: held-out prompts both"] == judged["heldout_prompt_codes"]["both"]


def test_a_table_run_reports_only_what_it_made(tmp_path):
    from dlc.demo import Demo

    demo = Demo(str(tmp_path / "d"), quick=True, table=True)
    rows = [{"conditioning": "none (unconditional DiT)", "FID": 301.2, "KID": 0.3, "samples": 8, "train": "T", "score": "S"},
            {"conditioning": "DLC encoded from test images", "FID": 150.6, "KID": 0.2, "samples": 8, "train": "T2",
             "score": "S2"}]
    demo.state = {"codes": {"seconds": 6.0, "result": {"usage": {"values_used_mean": 21.5}}},
                  "table": {"seconds": 9.0, "result": {"rows": rows, "steps": 2400}}}
    demo.stage_report()
    html = (tmp_path / "d" / "report.html").read_text()
    assert "301.2" in html and "21.5" in html and "2.00x the DLC-encoded" in html and "2400 steps" in html
    assert "(KID, unbiased at any count: 1.50x)" in html
    assert "<img" not in html  # no samples, no training curves: no pictures linked


def test_a_flat_folder_of_one_kind_still_gets_parents_and_an_unlabelled_grid(tmp_path):
    from PIL import Image

    from dlc.demo import Demo

    for i in range(10):  # no class folders, no captions, no test split
        Image.new("RGB", (16, 16), (10 * i, 100, 200)).save(tmp_path / f"{i}.png")
    demo = Demo(str(tmp_path / "d"), quick=True, dataset=f"imagefolder:{tmp_path}")
    assert demo.names(demo.test_set) is None and not demo.labelled and demo.prompts() == {}
    parents = demo.composition_parents(4)
    assert len(parents) == 4 and all(a != b for a, b in parents)
    names = [name for name, _, _ in demo.stages()]
    assert "prior" in names and "prior+text" not in names  # no captions: the prior alone

"""Smoke runs of the quality benchmarks on tiny saved models: they run end to end and measure real images."""

import importlib.util
import json
from pathlib import Path

import pytest
from test_pipeline import tiny_parts

from dlc.pipeline import DLCPipeline

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their shared helpers by file name
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe") / "pipeline"
    DLCPipeline(**tiny_parts()).save_pretrained(folder)
    return folder


def test_composition_benchmark_scores_the_generated_images(tiny_pipeline_dir, tmp_path, monkeypatch):
    out = tmp_path / "composition.json"
    result = load_benchmark("composition", monkeypatch).main(
        ["--model", str(tiny_pipeline_dir), "--pairs", "2", "--per-pair", "4", "--steps", "2", "--threads", "1",
         "--features", "tiny", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    for name in ("dlc", "average"):
        for column in ("vendi_tiny", "vendi_encoder"):
            # 4 distinct images of a random DiT: above 1 (identical images) and at most 4 (orthogonal ones);
            # a wrong pixel range (all-black input) would give exactly 1
            assert 1.01 < result["vendi"][name][column]["mean"] <= 4.0
    agreement = result["parent_agreement"]
    assert all(0.0 <= agreement[k]["mean"] <= 1.0 for k in ("parent_a", "parent_b", "unrelated_emoji"))
    assert agreement["uniform_chance"] == round(1 / 16, 4)

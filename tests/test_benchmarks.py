"""Smoke runs of the quality benchmarks on tiny saved models: they run end to end and measure real images."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from test_pipeline import tiny_parts

import dlc
from dlc import eval as dlc_eval
from dlc.compose import compose
from dlc.pipeline import DLCPipeline

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their shared helpers by file name
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The benchmarks set torch's thread count (--threads); later tests must not inherit it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe") / "pipeline"
    DLCPipeline(**tiny_parts()).save_pretrained(folder)
    return folder


def test_composition_benchmark_scores_the_generated_images(tiny_pipeline_dir, tmp_path, monkeypatch):
    out = tmp_path / "composition.json"
    args = ["--model", str(tiny_pipeline_dir), "--pairs", "1", "--per-pair", "4", "--steps", "2", "--threads", "1",
            "--features", "tiny", "--seed", "0", "--out", str(out)]
    result = load_benchmark("composition", monkeypatch).main(args)
    assert json.loads(out.read_text()) == result

    # the same pair scored by hand, from the pipeline's uint8 images: the benchmark must agree
    pipe = DLCPipeline.from_pretrained(tiny_pipeline_dir)
    test = dlc.data.load("emoji", size=32, split="test")
    (i, j), = result["parents"]
    a, b = pipe.encoder.encode(test.images[[i, j]])
    composed = compose([a, b], n=4, seed=0)
    images = pipe(codes=composed, guidance_scale=1.4, num_inference_steps=2, output_type="uint8").images
    expected_vendi = dlc_eval.vendi(pipe.encoder.features(images))
    recoded = pipe.encoder.encode(images)
    assert result["vendi"]["dlc"]["vendi_encoder"]["mean"] == pytest.approx(expected_vendi, abs=1e-3)
    assert result["vendi"]["dlc"]["vendi_tiny"]["mean"] == pytest.approx(
        dlc_eval.vendi(dlc_eval.image_features(images, "tiny")), abs=1e-3)
    assert result["parent_agreement"]["parent_a"]["mean"] == pytest.approx((recoded == a).float().mean().item(), abs=1e-3)
    assert result["parent_agreement"]["parent_b"]["mean"] == pytest.approx((recoded == b).float().mean().item(), abs=1e-3)
    # scored from black images (the old [0, 1]-as-[-1, 1] mistake) every feature is the same: Vendi 1
    assert expected_vendi > dlc_eval.vendi(pipe.encoder.features(torch.zeros_like(images))) + 0.05


def test_dit_curve_evaluates_the_last_checkpoint_reached_by_each_minute_mark(monkeypatch):
    curve = load_benchmark("dit_curve", monkeypatch)
    steps = [500, 1000, 1500, 2000]
    minutes = {500: 2.4, 1000: 4.9, 1500: 7.6, 2000: 10.2}
    assert curve.chosen_steps(steps, minutes, [5, 10, 15]) == [1000, 1500, 2000]
    assert curve.chosen_steps(steps, minutes, [1, 2]) == []  # no checkpoint yet by then
    assert curve.chosen_steps(steps, minutes, [8, 9]) == [1500]  # one checkpoint serves both marks
    assert curve.chosen_steps(steps, minutes, None) == steps


def test_guidance_colours_finds_green_drawn_over_yellow_and_values_pushed_out_of_range(monkeypatch):
    colours = load_benchmark("guidance_colours", monkeypatch)
    yellow, green, red = (250, 200, 40), (90, 200, 60), (220, 30, 30)
    source = torch.tensor([yellow, yellow, yellow, red], dtype=torch.uint8).T.reshape(1, 3, 2, 2)
    is_yellow, is_green = colours.colour_masks(source)
    assert is_yellow.flatten().tolist() == [True, True, True, False] and not is_green.any()
    # the sampler's values: one yellow pixel drawn green, one pushed past the range (clamped back to yellow)
    drawn = torch.tensor([green, yellow, yellow, red], dtype=torch.float32).T.reshape(1, 3, 2, 2) / 127.5 - 1
    drawn[0, 1, 0, 1] = 1.6
    stats = colours.colour_stats(drawn, source)
    assert stats["green_in_yellow"] == pytest.approx(1 / 3, abs=1e-4)
    assert stats["out_of_range"] == [0.0, 0.25, 0.0]
    assert stats["green_share"] == 0.25 and stats["green_share_real"] == 0.0


def test_text_identity_counts_the_prompted_codes_rank_among_the_nearest(monkeypatch):
    quality = load_benchmark("text_quality", monkeypatch)
    codes = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1], [2, 2, 2, 2]])
    generated = torch.tensor([[0, 0, 0, 1], [2, 2, 2, 1]])
    # the first is its target's own code; the second is nearest to code 3, two changes from code 1
    assert quality.identity_hits(generated, codes, torch.tensor([1, 1]), k=1) == 0.5
    assert quality.identity_hits(generated, codes, torch.tensor([1, 1]), k=3) == 1.0
    assert quality.identity_hits(generated, codes, torch.tensor([3, 0]), k=1) == 0.0


def test_pretrained_features_at_299_px_are_the_fid_networks_pool_and_smaller_inputs_work(monkeypatch):
    from dlc.eval.fidelity import InceptionWeightsError, inception_trunk

    bench = load_benchmark("pretrained_features", monkeypatch)
    try:
        trunk = inception_trunk()
    except InceptionWeightsError as e:
        pytest.skip(f"no offline TorchScript Inception here: {e}")
    images = dlc.data.load("emoji", size=32, split="test").images[:3]
    at_299 = bench.pooled_features(trunk, images, 299)
    assert torch.allclose(at_299, dlc_eval.image_features(images), atol=1e-4)  # FID's own input path
    at_75 = bench.pooled_features(trunk, images, 75)  # the smallest input its stem accepts
    assert at_75.shape == (3, 2048) and at_75.min() >= 0 and not torch.allclose(at_75, at_299, atol=1e-2)
    with pytest.raises(dlc.DLCError, match="75 px and up"):
        bench.pooled_features(trunk, images, 64)

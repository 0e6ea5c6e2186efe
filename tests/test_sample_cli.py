import json

import numpy as np
import pytest
import torch
from PIL import Image

from dlc.cli import main
from dlc.cli import sample as sample_cmd
from dlc.codes import save_codes
from dlc.pipeline import DLCPipeline, DLCPipelineOutput, Sampling
from dlc.seeding import sample_seed

L, V = 8, 16


class StubPipeline:
    """The DLCPipeline contract, with images that reveal what made them: pixel (0, 0) holds the
    code's sum, the rest is noise from (seed, index)."""

    calls: list = []
    sampling = Sampling()
    resolve_sampling = DLCPipeline.resolve_sampling

    def __call__(self, codes=None, image=None, num_images=None, prompt=None, generator=None, start_index=0,
                 output_type="pil", return_dict=True, **kwargs):
        seed = generator.initial_seed()
        StubPipeline.calls.append(dict(kwargs, seed=seed, start_index=start_index))
        if codes is None:
            n = num_images or len(image or prompt)
            codes = torch.stack([torch.full((L,), (start_index + i) % V) for i in range(n)])
        out = []
        for i, code in enumerate(codes):
            g = torch.Generator().manual_seed(sample_seed(seed, start_index + i))
            picture = torch.randint(0, 256, (3, 4, 4), generator=g, dtype=torch.uint8)
            picture[:, 0, 0] = int(code.sum())
            out.append(picture)
        return DLCPipelineOutput(images=out, codes=codes)

    class encoder:
        """Codes from the first row of the red channel; the CLI must resize images to input_size."""

        config = type("Config", (), {"input_size": None, "image_size": 8})

        @staticmethod
        def probs(images, tau):
            assert images.dtype == torch.uint8 and images.shape[1:] == (3, 8, 8) and tau == 1.0
            return torch.nn.functional.one_hot(images[:, 0, 0].long() % V, V).float()


@pytest.fixture
def stub(monkeypatch):
    StubPipeline.calls = []
    monkeypatch.setattr(sample_cmd, "load_pipeline", lambda path, device, trust_remote_code=False: StubPipeline())
    return StubPipeline


def read(folder):
    files = sorted((folder / "images").glob("*.png"))
    return [f.name for f in files], torch.stack([torch.from_numpy(np.array(Image.open(f))) for f in files])


def test_sample_from_codes_writes_pngs_grid_codes_settings_and_npz(stub, tmp_path):
    codes = torch.randint(0, V, (5, L), generator=torch.Generator().manual_seed(0))
    save_codes(tmp_path / "codes.npy", codes)
    out = tmp_path / "out"
    assert main(["sample", "model", "--codes", str(tmp_path / "codes.npy"), "--out", str(out), "--seed", "3",
                 "--guidance-scale", "2.0", "--steps", "7", "--sampler", "ddim", "--npz"]) == 0
    names, images = read(out)
    assert names == [f"{i:06d}.png" for i in range(5)]
    assert images[:, 0, 0, 0].tolist() == codes.sum(1).tolist()
    assert (out / "grid.png").is_file()
    assert np.array_equal(np.load(out / "codes.npy"), codes.numpy())
    npz = np.load(out / "samples.npz")["arr_0"]
    assert npz.dtype == np.uint8 and npz.shape == (5, 4, 4, 3) and np.array_equal(npz, images.numpy())
    settings = json.loads((out / "settings.json").read_text())
    dit = settings["sampling"]["dit"]
    assert settings["seed"] == 3 and dit["guidance_scale"] == 2.0 and dit["steps"] == 7
    assert dit["sampler"] == "ddim" and settings["num_images"] == 5 and settings["verb"] == "sample"
    assert stub.calls[0]["scheduler"] == "ddim" and stub.calls[0]["num_inference_steps"] == 7
    assert stub.calls[0]["seed"] == 3  # --seed reaches the pipeline as its generator's seed


def test_regenerating_one_sample_with_start_gives_the_same_image(stub, tmp_path):
    assert main(["sample", "model", "-n", "6", "--out", str(tmp_path / "all"), "--seed", "1"]) == 0
    assert main(["sample", "model", "-n", "1", "--start", "4", "--out", str(tmp_path / "one"), "--seed", "1"]) == 0
    _, everything = read(tmp_path / "all")
    names, one = read(tmp_path / "one")
    assert names == ["000004.png"] and torch.equal(one[0], everything[4])
    assert json.loads((tmp_path / "all" / "settings.json").read_text())["codes"] == "prior"


def test_compose_from_stored_codes_keeps_agreeing_positions(stub, tmp_path):
    a, b = torch.arange(L), torch.arange(L).flip(0)
    b[:2] = a[:2]
    save_codes(tmp_path / "codes.npy", torch.stack([a, b, a]))
    out = tmp_path / "out"
    assert main(["compose", "model", "--codes", str(tmp_path / "codes.npy"), "--rows", "0", "1", "-n", "6",
                 "--mask", "2-3", "--out", str(out)]) == 0
    codes = torch.from_numpy(np.load(out / "codes.npy").astype(np.int64))
    assert codes.shape == (6, L)
    assert (codes[:, :4] == a[:4]).all()  # agreeing positions and the masked ones come from a
    assert ((codes == a) | (codes == b)).all()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["sampling"]["composition"]["method"] == "random" and settings["sources"] == [f"{tmp_path / 'codes.npy'}[{r}]" for r in (0, 1)]
    _, images = read(out)
    assert images[:, 0, 0, 0].tolist() == codes.sum(1).tolist()


def test_compose_from_images_uses_the_pipeline_encoder(stub, tmp_path):
    for name, value in [("a.png", 3), ("b.png", 9)]:
        Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)).save(tmp_path / name)
    out = tmp_path / "out"
    assert main(["compose", "model", "--images", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-n", "4",
                 "--out", str(out)]) == 0
    codes = np.load(out / "codes.npy")
    assert set(np.unique(codes)) <= {3, 9} and len(np.unique(codes)) == 2


def test_text2img_numbers_samples_per_prompt(stub, tmp_path):
    out = tmp_path / "out"
    assert main(["text2img", "model", "red apple", "blue car", "-n", "3", "--out", str(out)]) == 0
    names, _ = read(out)
    assert len(names) == 6
    assert json.loads((out / "settings.json").read_text())["prompts"] == ["red apple", "blue car"]


@pytest.mark.parametrize("verb", [["compose", "--codes", "CODES", "--rows", "0", "1"], ["text2img", "red apple", "blue car"]])
def test_compose_and_text2img_resume_drawing_only_the_missing_samples(stub, tmp_path, verb):
    save_codes(tmp_path / "codes.npy", torch.randint(0, V, (2, L), generator=torch.Generator().manual_seed(1)))
    argv = ["model", *[str(tmp_path / "codes.npy") if a == "CODES" else a for a in verb[1:]], "-n", "3",
            "--chunk-size", "2", "--out", str(tmp_path / "out")]
    assert main([verb[0], *argv]) == 0
    names, before = read(tmp_path / "out")
    for name in names[1:3]:  # as if killed after the first image
        (tmp_path / "out" / "images" / name).unlink()
    stub.calls.clear()
    assert main([verb[0], *argv]) == 0
    assert [c["start_index"] for c in stub.calls] == [1]  # one chunk: the two missing, consecutive indices
    names_after, after = read(tmp_path / "out")
    assert names_after == names and torch.equal(after, before)


def test_bad_requests_are_one_line_errors(stub, tmp_path, capsys):
    save_codes(tmp_path / "codes.npy", torch.zeros(3, L, dtype=torch.long))
    assert main(["sample", "model", "--codes", str(tmp_path / "codes.npy"), "--start", "2", "-n", "5"]) == 1
    assert main(["compose", "model", "--codes", str(tmp_path / "codes.npy")]) == 1
    assert main(["compose", "model", "--codes", str(tmp_path / "codes.npy"), "--rows", "0", "1",
                 "--mask", "x-y"]) == 1
    err = capsys.readouterr().err
    assert "beyond the 3 given" in err and "--rows" in err and "--mask" in err


def as_two_processes(monkeypatch, argv: list[str]) -> None:
    """Run ``dlc ARGV`` as ranks 0 and 1 of a world of 2: two threads meeting at a real barrier."""
    import threading

    barrier, rank = threading.Barrier(2, timeout=60), threading.local()
    monkeypatch.setattr(sample_cmd, "wait_for_everyone", barrier.wait)
    monkeypatch.setattr(sample_cmd, "distributed", lambda: (rank.value, 2))
    codes = {}

    def process(r):
        rank.value = r
        codes[r] = main(argv)

    threads = [threading.Thread(target=process, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == {0: 0, 1: 0}


def test_two_processes_split_the_indices_and_match_one_process(stub, tmp_path, monkeypatch):
    assert main(["sample", "model", "-n", "5", "--out", str(tmp_path / "one"), "--seed", "2"]) == 0
    as_two_processes(monkeypatch, ["sample", "model", "-n", "5", "--out", str(tmp_path / "two"), "--seed", "2"])
    assert sorted(c["start_index"] for c in stub.calls[1:]) == [0, 3]  # contiguous blocks: 0-2 and 3-4
    names_one, one = read(tmp_path / "one")
    names_two, two = read(tmp_path / "two")
    assert names_one == names_two and torch.equal(one, two)
    assert json.loads((tmp_path / "two" / "settings.json").read_text())["num_images"] == 5


# --------------------------------------------------------------------------------------------
# The real pipeline, on a DiT trained for one step


@pytest.fixture(scope="module")
def tiny_dit_run(tmp_path_factory):
    from dlc.stages import STAGES

    run_dir = tmp_path_factory.mktemp("dit") / "run"
    stage = STAGES["dit"]
    config = stage.load_config("emoji", [
        "condition.kind=random", f"condition.code_length={L}", f"condition.random_vocab={V}", "model.arch=DiT-N/8",
        "train.steps=1", "train.batch_size=4", "train.checkpoint_every=1", "train.sample_every=0",
        "sample.num=2", "sample.steps=2", f"run_dir={run_dir}"])
    stage.train(config)
    return run_dir


def test_sample_command_on_a_saved_pipeline(tiny_dit_run, tmp_path):
    codes = torch.randint(0, V, (3, L), generator=torch.Generator().manual_seed(0))
    save_codes(tmp_path / "codes.npy", codes)
    common = ["--codes", str(tmp_path / "codes.npy"), "--steps", "2", "--seed", "5", "--device", "cpu"]
    assert main(["sample", str(tiny_dit_run), *common, "--out", str(tmp_path / "a"), "--batch-size", "3", "--npz"]) == 0
    assert main(["sample", str(tiny_dit_run), *common, "--out", str(tmp_path / "b"), "--batch-size", "1"]) == 0
    names, a = read(tmp_path / "a")
    _, b = read(tmp_path / "b")
    assert names == ["000000.png", "000001.png", "000002.png"] and a.shape == (3, 32, 32, 3)
    assert torch.equal(a, b)  # batch size does not change any image
    assert a.float().std() > 0 and not torch.equal(a[0], a[1])
    settings = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert settings["sampling"]["dit"]["steps"] == 2 and settings["seed"] == 5 and settings["model"] == str(tiny_dit_run)
    assert np.load(tmp_path / "a" / "samples.npz")["arr_0"].shape == (3, 32, 32, 3)
    assert main(["sample", str(tiny_dit_run), *common, "--out", str(tmp_path / "c"), "--start", "2"]) == 0
    names, c = read(tmp_path / "c")
    assert names == ["000002.png"] and torch.equal(c[0], a[2])

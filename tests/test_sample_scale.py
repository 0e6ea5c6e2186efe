"""Sampling at scale: PNGs streamed chunk by chunk, a re-run after a kill that draws only what is
missing and ends byte-identical to an uninterrupted run, no mixing with a folder made with other
settings, a grid of the first 64 only, the ADM .npz streamed, and torchrun splitting the work."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_sample_cli import L, StubPipeline, V, read, stub, tiny_dit_run  # noqa: F401  (stub, tiny_dit_run: fixtures)

from dlc.cli import main
from dlc.codes import save_codes
from dlc.errors import DLCError
from dlc.npzio import read_npz_array, write_npz
from dlc.sample_folder import SampleFolder

ROOT = Path(__file__).resolve().parents[1]


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file's bytes but settings.json (it records when and how each run was started)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "settings.json"}


@pytest.mark.usefixtures("stub")
def test_a_rerun_after_a_kill_draws_only_the_missing_samples_and_ends_byte_identical(tmp_path, monkeypatch):
    command = ["sample", "model", "-n", "10", "--chunk-size", "3", "--seed", "4", "--npz"]
    assert main([*command, "--out", str(tmp_path / "whole")]) == 0

    real_write, written = SampleFolder.write, []

    def killed_in_the_third_chunk(folder, images, indices):
        if len(written) == 2:  # half a PNG on disk, then the process dies
            folder.path(indices[0]).with_name(f".partial-{indices[0]:06d}.png").write_bytes(b"\x89PNG trunc")
            raise KeyboardInterrupt
        written.append(list(indices))
        real_write(folder, images, indices)

    monkeypatch.setattr(SampleFolder, "write", killed_in_the_third_chunk)
    out = tmp_path / "killed"
    assert main([*command, "--out", str(out)]) == 130
    assert written == [[0, 1, 2], [3, 4, 5]] and not (out / "grid.png").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("[0-9]*.png")}  # not the half-written one
    assert sorted(kept) == [f"{i:06d}.png" for i in range(6)]

    monkeypatch.setattr(SampleFolder, "write", real_write)
    StubPipeline.calls.clear()
    assert main([*command, "--out", str(out)]) == 0
    assert [c["start_index"] for c in StubPipeline.calls] == [6, 9]  # chunks 6-8 and 9 only
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png") if p.name in kept} == kept
    assert files_of(out) == files_of(tmp_path / "whole")  # every PNG, the grid and the npz
    assert not list(out.rglob(".partial-*"))
    assert json.loads((out / "settings.json").read_text())["num_images"] == 10


@pytest.mark.usefixtures("stub")
def test_a_folder_made_with_other_settings_is_refused_and_left_as_it_was(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sample", "model", "-n", "4", "--seed", "0", "--out", str(out)]) == 0
    before = {**files_of(out), "settings.json": (out / "settings.json").read_bytes()}
    assert main(["sample", "model", "-n", "4", "--seed", "1", "--steps", "7", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "other settings" in err and "seed: 0 there, 1 now" in err and "sampling.dit.steps: 50 there, 7 now" in err
    assert {**files_of(out), "settings.json": (out / "settings.json").read_bytes()} == before

    # the same settings with more samples, another batch or chunk size: extends the folder
    StubPipeline.calls.clear()
    assert main(["sample", "model", "-n", "6", "--seed", "0", "--batch-size", "2", "--chunk-size", "5",
                 "--out", str(out)]) == 0
    assert [c["start_index"] for c in StubPipeline.calls] == [4]
    assert json.loads((out / "settings.json").read_text())["num_images"] == 6


@pytest.mark.usefixtures("stub")
def test_images_without_settings_are_not_mixed_with(tmp_path, capsys):
    (tmp_path / "out" / "images").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "out" / "images" / "000000.png")
    assert main(["sample", "model", "-n", "2", "--out", str(tmp_path / "out")]) == 1
    assert "no settings.json" in capsys.readouterr().err


@pytest.mark.usefixtures("stub")
def test_a_run_killed_before_its_first_image_does_not_hold_the_folder(tmp_path, monkeypatch):
    def killed(folder, images, indices):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(SampleFolder, "write", killed)
        assert main(["sample", "model", "-n", "2", "--seed", "0", "--out", str(tmp_path / "out")]) == 130
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["seed"] == 0
    assert main(["sample", "model", "-n", "2", "--seed", "1", "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "settings.json").read_text())["seed"] == 1


@pytest.mark.usefixtures("stub")
def test_the_grid_shows_the_first_64_samples_and_reads_back_no_others(tmp_path, monkeypatch):
    real_read, reads = SampleFolder.read, []
    monkeypatch.setattr(SampleFolder, "read", lambda folder, i: reads.append(i) or real_read(folder, i))
    assert main(["sample", "model", "-n", "70", "--grid-scale", "1", "--out", str(tmp_path / "out")]) == 0
    assert reads == list(range(64))
    grid = Image.open(tmp_path / "out" / "grid.png")
    assert grid.size == (8 * (4 + 2) + 2, 8 * (4 + 2) + 2)  # 8 x 8 cells of 4 px images, 2 px apart
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 70


def test_the_npz_is_written_row_by_row_and_read_as_a_memory_map(tmp_path):
    rows = np.random.default_rng(0).integers(0, 256, (5, 4, 3, 3), dtype=np.uint8)
    write_npz(tmp_path / "a.npz", rows.shape, iter(rows))
    write_npz(tmp_path / "b.npz", rows.shape, (r for r in rows))
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert np.array_equal(np.load(tmp_path / "a.npz")["arr_0"], rows)
    mapped = read_npz_array(tmp_path / "a.npz")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, rows)
    np.savez_compressed(tmp_path / "c.npz", arr_0=rows)  # compressed: loaded instead
    assert np.array_equal(read_npz_array(tmp_path / "c.npz"), rows)
    with pytest.raises(DLCError, match="got 4 rows"):
        write_npz(tmp_path / "d.npz", rows.shape, iter(rows[:4]))
    assert not (tmp_path / "d.npz").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_with_the_default_device_splits_the_samples_between_ranks(tiny_dit_run, tmp_path):  # noqa: F811
    codes = torch.randint(0, V, (4, L), generator=torch.Generator().manual_seed(0))
    save_codes(tmp_path / "codes.npy", codes)
    args = [str(tiny_dit_run), "--codes", str(tmp_path / "codes.npy"), "--steps", "2", "--seed", "3"]
    assert main(["sample", *args, "--out", str(tmp_path / "one"), "--device", "cpu", "--chunk-size", "1"]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), "-m", "dlc.cli", "sample", *args, "--out", str(tmp_path / "two")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        assert f"process {rank} of 2: 2 of its 2 samples to draw" in result.stdout
    assert files_of(tmp_path / "two")["images/000003.png"] == files_of(tmp_path / "one")["images/000003.png"]
    names, two = read(tmp_path / "two")
    _, one = read(tmp_path / "one")
    assert len(names) == 4 and torch.equal(one, two)  # chunks of 1 in one process = blocks of 2 in two

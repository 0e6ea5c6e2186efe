"""dlc.progress: tqdm's bar on a terminal, plain lines (no carriage returns) in a log file."""

import io

import pytest
from tqdm import tqdm as terminal_bar

from dlc import progress
from dlc.cli import main


class Clock:
    """time.monotonic for dlc.progress, moved on by the test."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    return clock


def test_a_log_file_gets_one_line_per_tenth_of_the_total_and_no_carriage_returns(clock):
    log = io.StringIO()
    bar = progress.tqdm(total=100, desc="train dit", file=log, dynamic_ncols=True)
    for step in range(100):
        clock.now += 1
        bar.update(1)
        bar.set_postfix(done=step + 1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert [line.split("%")[0] for line in lines] == [f"train dit: {p}" for p in range(10, 101, 10)] + ["train dit: 100"]
    assert lines[4] == "train dit: 50% 50/100 [00:50<00:50,  1.00it/s, done=49]"  # tqdm's words, one second a step
    assert lines[-1].endswith("done=100]")  # the final line carries the last postfix


def test_without_a_total_a_line_every_interval_of_seconds(clock):
    log = io.StringIO()
    for _ in progress.tqdm(iter(range(20)), desc="encoding", file=log, every_seconds=5):
        clock.now += 1
    lines = log.getvalue().splitlines()
    assert [line.split(" ")[1] for line in lines] == ["5", "10", "15", "20"]


def test_short_inner_bars_that_do_not_leave_stay_silent(clock):
    log = io.StringIO()
    assert list(progress.tqdm(range(3), desc="sampling", leave=False, file=log)) == [0, 1, 2]
    with progress.tqdm(total=3, file=log, disable=True) as bar:
        bar.update(3)
    assert log.getvalue() == ""
    assert list(progress.tqdm(range(3), desc="sampling", file=log)) == [0, 1, 2]  # one that leaves says it ended
    assert log.getvalue().splitlines()[-1].startswith("sampling: 100% 3/3")


def test_a_terminal_gets_tqdms_bar():
    assert isinstance(progress.tqdm(total=3, file=Terminal(), disable=True), terminal_bar)
    assert isinstance(progress.tqdm(total=3, file=io.StringIO()), progress.LogProgress)


def test_training_logged_to_a_file_writes_plain_progress_lines(tmp_path, capsys):
    assert main(["train", "dit", "--config", "emoji", "condition.kind=random", "condition.code_length=4",
                 "condition.random_vocab=8", "model.arch=DiT-N/8", "train.steps=2", "train.batch_size=4",
                 "train.sample_every=0", "sample.num=1", "sample.steps=1", f"run_dir={tmp_path / 'run'}"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "train dit: 100% 2/2 [" in err

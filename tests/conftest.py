import os

import pytest
import torch

import dlc  # noqa: F401  first: its torchvision fix (an editable install has no start-up hook)

torch.set_num_threads(int(os.environ.get("DLC_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def emoji_train():

    return dlc.data.load("emoji", size=32, split="train")


@pytest.fixture
def run_dir(tmp_path):
    from dlc.runs import RunDir

    return RunDir(tmp_path / "run")

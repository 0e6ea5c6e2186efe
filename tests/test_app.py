"""The composition playground (``dlc app``): its callbacks on a tiny pipeline, and the real page in
headless Chromium (Debian's ``chromium``, driven by playwright) against ``dlc app`` on a saved pipeline."""

import re
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from test_pipeline import L, V, tiny_parts

from dlc.compose import compose, group_mask
from dlc.errors import CodeError, DLCError
from dlc.pipeline import DLCPipeline, code_seed

gr = pytest.importorskip("gradio", reason="the playground needs the app extra: pip install '.[app]'")

from dlc.app import Playground, Settings, build_app, load_examples, parse_layout  # noqa: E402

RUN = Settings(num_images=4, seed=3, steps=2, guidance_scale=1.0)


@pytest.fixture(scope="module")
def pipe():
    pipe = DLCPipeline(**tiny_parts())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def parents():
    """Four test emoji whose codes differ from each other at most positions."""
    import dlc

    data = dlc.data.load("emoji", size=32, split="test")
    return [Image.fromarray(data[i]["image"].permute(1, 2, 0).numpy()) for i in (3, 120, 200, 300)]


@pytest.fixture(scope="module")
def playground(pipe, parents):
    return Playground(pipe, examples=parents[2:], prompts=["red apple"])


def table_rows(html: str) -> dict[str, list[str]]:
    """A codes table's rows: label -> cell texts (rows wrapped at CELLS_PER_ROW joined up)."""
    rows: dict[str, list[str]] = {}
    for label, cells in re.findall(r"<tr><th[^>]*>([^<]*)</th>(.*?)</tr>", html):
        if label != "pos":
            rows.setdefault(label, []).extend(re.findall(r"<td[^>]*>([^<]*)</td>", cells))
    return rows


def cell_colours(html: str, label: str) -> list[str]:
    row = re.search(rf"<tr><th[^>]*>{re.escape(label)}</th>(.*?)</tr>", html).group(1)
    return re.findall(r"background: ([^']*)'", row)


# ---- the library pieces the page uses --------------------------------------------------------


def test_group_mask_cuts_the_positions_into_contiguous_groups():
    assert group_mask([0, 1], 8).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert group_mask([2, -1, 0, 1], 8).tolist() == [2, 2, -1, -1, 0, 0, 1, 1]
    assert group_mask([0, 1, -1], 8).tolist() == [0, 0, 0, 1, 1, 1, -1, -1]  # position p in group p*3//8
    assert group_mask(list(range(8)), 8).tolist() == list(range(8))  # G = L: one source per position
    a, b = torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.long)
    assert (compose([a, b], n=3, mask=group_mask([1, 0], 8)) == torch.tensor([1] * 4 + [0] * 4)).all()
    for groups in ([], list(range(9))):
        with pytest.raises(CodeError, match="between 1 and L = 8 groups"):
            group_mask(groups, 8)


def test_a_layout_names_the_filled_slots_by_letter():
    assert parse_layout("AB?a", ["A", "B"]) == [0, 1, -1, 0]
    assert parse_layout("C, A | *", ["A", "C"]) == [1, 0, -1]  # slot C is the second parent
    assert parse_layout("  ", ["A", "B"]) is None
    with pytest.raises(DLCError, match="slot C is empty"):
        parse_layout("AC", ["A", "B"])
    with pytest.raises(DLCError, match="'Z'"):
        parse_layout("AZ", ["A", "B"])


# ---- the callbacks ---------------------------------------------------------------------------


def test_the_parents_codes_are_the_encoders_tokens(playground, pipe, parents):
    html = playground.parent_codes([parents[0], None, parents[1], None])
    rows = table_rows(html)
    codes = pipe.make_codes(image=[parents[0], parents[1]])
    assert list(rows) == ["A", "C"]  # the filled slots, by their letters
    assert rows["A"] == [str(v) for v in codes[0].tolist()] and rows["C"] == [str(v) for v in codes[1].tolist()]
    assert "no codes yet" in playground.parent_codes([None] * 4)


def test_compose_takes_each_group_from_its_parent_and_draws_the_dits_images(playground, pipe, parents):
    gallery, html, codes = playground.compose([parents[0], parents[1], None, None], "AB", [1, 1, 1, 1], RUN)
    a, b = pipe.make_codes(image=parents[:2])
    assert codes.shape == (4, L) and (codes[:, : L // 2] == a[: L // 2]).all() and (codes[:, L // 2:] == b[L // 2:]).all()
    want = pipe(codes=codes, num_inference_steps=2, guidance_scale=1.0, generator=torch.Generator().manual_seed(3),
                output_type="np").images
    assert len(gallery) == 4 and [label for _, label in gallery] == ["#0", "#1", "#2", "#3"]
    shown = np.asarray(gallery[1][0].resize((32, 32), Image.NEAREST), dtype=np.float32) / 255
    assert np.abs(shown - want[1]).max() <= 1 / 255 + 1e-6  # the DiT's image, only enlarged for the page
    assert table_rows(html)["#2"] == [str(v) for v in codes[2].tolist()]
    # each token is coloured by the parent it came from, grey where both parents hold it
    colours = cell_colours(html, "#0")
    assert colours == [("#eeeeee" if a[p] == b[p] else "#f4a582" if p < L // 2 else "#92c5de") for p in range(L)]


def test_a_random_mix_follows_the_weights_and_the_seed(playground, pipe, parents):
    images = [parents[0], None, parents[1], None]
    a, c = pipe.make_codes(image=[parents[0], parents[1]])
    only_c = playground.compose(images, "", [0, 1, 1, 0], RUN)[2]  # weights of A, B (empty), C, D (empty)
    assert (only_c == c).all()
    mixed = playground.compose(images, "?A", [1, 0, 0.5, 0], RUN)[2]
    want = compose([a, c], n=4, seed=3, weights=[1, 0.5], mask=group_mask([-1, 0], L), vocab_size=V)
    assert torch.equal(mixed, want) and (mixed[:, L // 2:] == a[L // 2:]).all()
    assert not torch.equal(mixed, playground.compose(images, "?A", [1, 0, 0.5, 0], Settings(4, seed=4, steps=2))[2])


def test_text_to_image_draws_codes_from_the_text_model(playground, pipe):
    gallery, html, codes = playground.text_to_image("red apple\n\ncat face\n", Settings(2, seed=5, steps=2))
    assert torch.equal(codes, pipe.text_model.generate(["red apple", "cat face"], num_per_prompt=2, seed=code_seed(5)))
    assert [label for _, label in gallery] == ["red apple", "red apple", "cat face", "cat face"]
    assert table_rows(html)["#3"] == [str(v) for v in codes[3].tolist()]


def test_an_example_fills_the_first_empty_slot(playground, parents):
    slots = playground.pick_example([parents[0], None, None, None], 1)
    assert slots[0] is parents[0] and slots[1] is playground.examples[1] and slots[2:] == [None, None]


def test_the_layout_preview_shows_each_positions_parent(playground, parents):
    preview = playground.layout_preview("BA", [parents[0], parents[1], None, None])
    assert table_rows(preview)["from"] == ["B"] * (L // 2) + ["A"] * (L // 2)
    assert table_rows(playground.layout_preview("", [parents[0], parents[1], None, None]))["from"] == ["?"] * L
    assert "slot D is empty" in playground.layout_preview("AD", [parents[0], parents[1], None, None])


def test_errors_reach_the_page_as_one_line(playground, pipe, parents):
    with pytest.raises(gr.Error, match="two to four parents.*got 1"):
        playground.compose([parents[0], None, None, None], "", [1] * 4, RUN)
    with pytest.raises(gr.Error, match="slot C is empty"):
        playground.compose(parents[:2] + [None, None], "AC", [1] * 4, RUN)
    with pytest.raises(gr.Error, match="non-negative numbers"):
        playground.compose(parents[:2] + [None, None], "", [0] * 4, RUN)
    with pytest.raises(gr.Error, match="type a prompt"):
        playground.text_to_image(" \n", RUN)
    with pytest.raises(gr.Error, match="slots are full"):
        playground.pick_example(parents, 0)
    no_text = DLCPipeline(**{**tiny_parts(), "text_model": None})
    with pytest.raises(gr.Error, match="no text model"):
        Playground(no_text).text_to_image("red apple", RUN)


def test_examples_are_spread_over_the_test_split_or_read_from_a_folder(tmp_path):
    import dlc

    images, captions = load_examples("emoji", 32, count=3)
    data = dlc.data.load("emoji", size=32, split="test")
    spread = np.linspace(0, len(data) - 1, 3).round().astype(int).tolist()  # first, middle, last
    assert [np.asarray(im).tolist() for im in images] == [data[i]["image"].permute(1, 2, 0).numpy().tolist() for i in spread]
    assert captions == [data[i]["caption"] for i in spread]
    for i, colour in enumerate(["red", "blue"]):
        Image.new("RGB", (40, 40), colour).save(tmp_path / f"{i}.png")
    images, captions = load_examples(str(tmp_path), 16, count=5)
    assert [im.size for im in images] == [(16, 16)] * 2 and images[1].getpixel((8, 8)) == (0, 0, 255)


def test_the_page_is_built_from_the_playground(playground):
    ids = {block.elem_id for block in build_app(playground).blocks.values()}
    assert {"parent-A", "parent-D", "layout", "compose", "compositions", "examples", "prompt", "generate"} <= ids


def test_the_cli_says_how_to_install_gradio_when_it_is_missing(monkeypatch, capsys, tmp_path):
    from dlc.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now fails
    monkeypatch.delitem(sys.modules, "dlc.app")
    assert main(["app", str(tmp_path)]) != 0
    assert 'pip install "dlc[app]"' in capsys.readouterr().err


def test_the_cli_finds_the_runs_dataset_for_the_gallery(tmp_path):
    from dlc.cli.app import trained_dataset

    (tmp_path / "dit").mkdir()
    (tmp_path / "dit" / "config.yaml").write_text("data:\n  dataset: fashion-mnist\n  size: 32\n")
    assert trained_dataset(str(tmp_path)) == "fashion-mnist"
    assert trained_dataset(str(tmp_path / "dit")) == "fashion-mnist"
    assert trained_dataset(str(tmp_path / "missing")) is None


# ---- the real page in a browser --------------------------------------------------------------


# every image the selector finds (at least one) has loaded and has pixels
ALL_LOADED = "s => { const im = [...document.querySelectorAll(s)]; return im.length > 0 && im.every(i => i.complete && i.naturalWidth > 0); }"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``dlc app`` on a saved tiny pipeline with the emoji gallery: (its address, a parent image file)."""
    if shutil.which("chromium") is None:
        pytest.skip("the browser test needs Debian's chromium (apt-get install chromium)")
    pytest.importorskip("playwright")
    folder = tmp_path_factory.mktemp("app")
    DLCPipeline(**tiny_parts()).save_pretrained(folder / "pipeline")
    import dlc

    data = dlc.data.load("emoji", size=32, split="test")
    for i, index in enumerate((3, 120)):
        Image.fromarray(data[index]["image"].permute(1, 2, 0).numpy()).save(folder / f"parent{i}.png")
    port, log = free_port(), folder / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "dlc", "app", str(folder / "pipeline"), "--examples", "emoji",
                                   "--num-examples", "6", "--device", "cpu", "--port", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        while "Running on" not in log.read_text():
            if server.poll() is not None:
                pytest.fail(f"dlc app exited with {server.returncode} before serving the page:\n{log.read_text()}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", folder
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def page(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(served[0])
        page.wait_for_selector("#compose")
        yield page
        browser.close()


@pytest.mark.slow
def test_in_a_browser_an_upload_and_a_pick_compose_into_images(served, page):
    page.locator("#parent-A input[type=file]").set_input_files(served[1] / "parent0.png")
    page.locator("#examples img").nth(2).click()  # the third example goes to slot B
    page.wait_for_function("document.querySelectorAll('#parent-codes tr').length === 3", timeout=30_000)
    rows = table_rows(page.inner_html("#parent-codes"))
    assert list(rows) == ["A", "B"] and all(len(r) == L for r in rows.values())
    page.fill("#layout textarea", "AB")
    page.wait_for_function("document.querySelector('#layout-preview').innerText.includes('B')")
    page.click("#compose")
    page.wait_for_function(ALL_LOADED, arg="#compositions img", timeout=60_000)
    assert page.locator("#compositions img").count() == 8
    composed = table_rows(page.inner_html("#composed-codes"))
    assert len(composed) == 8 and all(c[: L // 2] == rows["A"][: L // 2] and c[L // 2:] == rows["B"][L // 2:]
                                      for c in composed.values())


@pytest.mark.slow
def test_in_a_browser_an_error_shows_in_the_page(served, page):
    page.locator("#parent-A input[type=file]").set_input_files(served[1] / "parent0.png")
    page.wait_for_function("document.querySelectorAll('#parent-codes tr').length === 2", timeout=30_000)
    page.click("#compose")
    toast = page.get_by_text("composition needs two to four parents")
    toast.wait_for(timeout=30_000)
    assert toast.first.is_visible()


@pytest.mark.slow
def test_in_a_browser_a_prompt_makes_images(served, page):
    page.get_by_role("tab", name="Text to image").click()
    page.fill("#prompt textarea", "red apple")
    page.click("#generate")
    page.wait_for_function(ALL_LOADED, arg="#text-images img", timeout=60_000)
    assert page.locator("#text-images img").count() == 8
    assert table_rows(page.inner_html("#text-codes")).keys() == {f"#{i}" for i in range(8)}

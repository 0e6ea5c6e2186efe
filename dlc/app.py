"""The composition playground behind ``dlc app RUN``: a Gradio page on ``DLCPipeline`` and ``dlc.compose``.

    from dlc.app import Playground, build_app
    page = build_app(Playground(pipe, examples=images))      # a gr.Blocks
    page.launch()

Two to four parents (uploaded, or picked from a gallery of examples) are encoded to their codes of
L tokens, shown as a table. A layout string says which parent each group of positions comes from:
one letter per group (A-D a parent, ``?`` a random mix), cut as ``dlc.compose.group_mask`` cuts
them, so "AB" is halves, "ABCD" quarters and L letters one parent per position; an empty layout is
a random mix everywhere. Free positions take their token from a parent drawn with the parents'
weights (the paper's composition). The composed codes, coloured by the parent of each token, and
the DiT's images of them appear below; a second tab makes images from a prompt.

``Playground`` holds what the page does as plain methods (tested without a browser); each turns a
``DLCError`` into a ``gr.Error`` with its one line, which Gradio shows in the page. ``build_app``
is the wiring: components, events, progress (the pipeline's denoising bar, tracked by Gradio).
"""

from __future__ import annotations

import functools
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home

import gradio as gr  # noqa: E402

from .compose import compose, group_mask  # noqa: E402
from .errors import DLCError  # noqa: E402
from .imageio import to_pil  # noqa: E402

LETTERS = "ABCD"
PARENT_COLOURS = dict(zip(LETTERS, ("#f4a582", "#92c5de", "#f6e27f", "#a6d96a")))
AGREE = "#eeeeee"  # a token that several parents hold
FREE_MARKS = "?*."  # a layout letter that leaves its group to the random mix
SEPARATORS = " ,|/-_"
CELLS_PER_ROW = 32  # code tables wrap after this many positions
DISPLAY_SIZE = 128  # small images are enlarged (nearest neighbour) to at least this for the page

BOX = "font: 11px/1.2 ui-monospace, monospace; overflow-x: auto"  # inline styles: no page CSS needed
TABLE = "border-collapse: collapse; margin-bottom: 6px"
PAGE_CSS = """
.dlc-parent img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.dlc-results .grid-wrap { height: auto !important; min-height: 0 !important; max-height: none !important; }
.dlc-results img { image-rendering: pixelated; }
"""
CELL = "padding: 1px 3px; border: 1px solid #ddd; text-align: center; min-width: 1.6em"


@dataclass
class Settings:
    """How the DiT draws the images: the same for compositions and prompts."""

    num_images: int = 8
    seed: int = 0
    steps: int = 25
    guidance_scale: float = 1.4

    def pipeline_kwargs(self) -> dict:
        return dict(num_inference_steps=int(self.steps), guidance_scale=float(self.guidance_scale),
                    generator=torch.Generator().manual_seed(int(self.seed or 0)))


def shown_in_page(method):
    """A callback whose ``DLCError`` reaches the page as a ``gr.Error`` with the error's one line."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except DLCError as e:
            raise gr.Error(str(e), print_exception=False) from e

    return wrapper


def parse_layout(layout: str, letters: Sequence[str]) -> list[int] | None:
    """'AB?A' -> the source index of each group among the filled slots ``letters`` (-1: mixed);
    an empty layout -> None (a random mix everywhere)."""
    groups = []
    for char in layout.upper():
        if char in SEPARATORS:
            continue
        if char in FREE_MARKS:
            groups.append(-1)
        elif char in LETTERS and char in letters:
            groups.append(list(letters).index(char))
        elif char in LETTERS:
            raise DLCError(f"the layout names parent {char}, but slot {char} is empty; the parents are "
                           f"{', '.join(letters) or 'none yet'}")
        else:
            raise DLCError(f"the layout holds {char!r}; use one letter per group: A-D a parent, ? a random mix")
    return groups or None


def enlarged(image: Image.Image, size: int = DISPLAY_SIZE) -> Image.Image:
    """A small image scaled up by a whole factor with nearest neighbours, so its pixels stay sharp."""
    factor = max(1, -(-size // max(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor > 1 else image


def value_colour(value: int, vocab_size: int) -> str:
    """A light colour per token value: equal tokens look equal across rows."""
    return f"hsl({round(360 * value / vocab_size)}, 65%, 85%)"


def codes_table(rows: Sequence[tuple[str, Sequence, Sequence[str]]]) -> str:
    """HTML tables of codes: ``rows`` of (label, L cells (tokens), L cell colours), wrapped every
    CELLS_PER_ROW positions under a header of position numbers."""
    if not rows:
        return boxed("<em>no codes yet</em>")
    length = len(rows[0][1])
    tables = []
    for start in range(0, length, CELLS_PER_ROW):
        positions = range(start, min(length, start + CELLS_PER_ROW))
        head = f"<tr><th style='{CELL}; color: #777'>pos</th>" + "".join(f"<th style='{CELL}; color: #777'>{p}</th>" for p in positions) + "</tr>"
        body = "".join(
            f"<tr><th style='{CELL}'>{html.escape(label)}</th>"
            + "".join(f"<td style='{CELL}; background: {colours[p]}'>{cells[p]}</td>" for p in positions) + "</tr>"
            for label, cells, colours in rows)
        tables.append(f"<table style='{TABLE}'>{head}{body}</table>")
    return boxed("".join(tables))


def boxed(content: str) -> str:
    return f"<div class='dlc-codes' style='{BOX}'>{content}</div>"


def legend(letters: Sequence[str]) -> str:
    """What the colours of a composed code mean."""
    spans = [(f"from {c}", PARENT_COLOURS[c]) for c in letters] + [("parents agree", AGREE)]
    return boxed("".join(f"<span style='{CELL}; background: {colour}; margin-right: 4px'>{text}</span>"
                         for text, colour in spans))


class Playground:
    """The page's actions on one pipeline, as plain functions of the page's inputs."""

    def __init__(self, pipe, examples: Sequence[Image.Image] = (), prompts: Sequence[str] = ()):
        table = pipe.dit.code_embedder
        if table is None:
            raise DLCError("this DiT is unconditional: it reads no codes, so there is nothing to compose")
        self.pipe, self.examples, self.prompts = pipe, list(examples), list(prompts)
        self.code_length, self.vocab_size = table.code_length, table.vocab_size

    # ---- parents -------------------------------------------------------------------------------

    def parents(self, images: Sequence[Image.Image | None]) -> tuple[list[str], torch.Tensor]:
        """The letters of the filled slots and their codes (S, L)."""
        filled = [(letter, image) for letter, image in zip(LETTERS, images) if image is not None]
        if not filled:
            return [], torch.zeros(0, self.code_length, dtype=torch.long)
        return [letter for letter, _ in filled], self.pipe.make_codes(image=[image for _, image in filled])

    @shown_in_page
    def parent_codes(self, images: Sequence[Image.Image | None]) -> str:
        """The parents' codes as a table; equal token values share a colour."""
        letters, codes = self.parents(images)
        return codes_table([(c, code.tolist(), [value_colour(int(v), self.vocab_size) for v in code])
                            for c, code in zip(letters, codes)])

    @shown_in_page
    def pick_example(self, images: Sequence[Image.Image | None], index: int) -> list[Image.Image | None]:
        """The slots with example ``index`` put in the first empty one."""
        slots = list(images)
        if None not in slots:
            raise DLCError("all four parent slots are full: clear one (its x button) to pick another example")
        slots[slots.index(None)] = self.examples[index]
        return slots

    def layout_preview(self, layout: str, images: Sequence[Image.Image | None]) -> str:
        """Which parent each position takes under ``layout`` (nothing encoded: quick while typing)."""
        letters = [c for c, image in zip(LETTERS, images) if image is not None]
        try:
            groups = parse_layout(layout, letters)
        except DLCError as e:
            return boxed(f"<em>{html.escape(str(e))}</em>")
        sources = group_mask(groups, self.code_length).tolist() if groups else [-1] * self.code_length
        names = [letters[s] if s >= 0 else "?" for s in sources]
        return codes_table([("from", names, [PARENT_COLOURS.get(n, "#fff") for n in names])])

    # ---- composing and generating --------------------------------------------------------------

    @shown_in_page
    def compose(self, images: Sequence[Image.Image | None], layout: str, weights: Sequence[float],
                settings: Settings) -> tuple[list, str, torch.Tensor]:
        """Images of ``settings.num_images`` codes composed from the parents: (gallery items, the
        codes as a table coloured by each token's parent, the codes (n, L))."""
        letters, parents = self.parents(images)
        if len(parents) < 2:
            raise DLCError(f"composition needs two to four parents: upload or pick images; got {len(parents)}")
        groups = parse_layout(layout, letters)
        codes = compose(list(parents), n=int(settings.num_images), seed=int(settings.seed or 0),
                        weights=[float(weights[LETTERS.index(c)]) for c in letters],
                        mask=group_mask(groups, self.code_length) if groups else None, vocab_size=self.vocab_size)
        images = self.pipe(codes=codes, **settings.pipeline_kwargs()).images
        rows = [(f"#{i}", code.tolist(), self._parent_colours(code, parents, letters)) for i, code in enumerate(codes)]
        return self._gallery(images), legend(letters) + codes_table(rows), codes

    @shown_in_page
    def text_to_image(self, prompt: str, settings: Settings) -> tuple[list, str, torch.Tensor]:
        """Images for each line of ``prompt``, ``settings.num_images`` per line: (gallery items, codes table, codes)."""
        prompts = [line.strip() for line in prompt.splitlines() if line.strip()]
        if not prompts:
            raise DLCError("type a prompt (one per line for several), e.g. 'red apple'")
        out = self.pipe(prompt=prompts, num_images_per_prompt=int(settings.num_images), **settings.pipeline_kwargs())
        labels = [p for p in prompts for _ in range(int(settings.num_images))]
        rows = [(f"#{i}", code.tolist(), [value_colour(int(v), self.vocab_size) for v in code])
                for i, code in enumerate(out.codes)]
        return self._gallery(out.images, labels), codes_table(rows), out.codes

    def _parent_colours(self, code: torch.Tensor, parents: torch.Tensor, letters: list[str]) -> list[str]:
        """Per position: the colour of the one parent holding this token, grey where several do."""
        holders = parents == code  # (S, L)
        return [PARENT_COLOURS[letters[int(h.nonzero()[0])]] if h.sum() == 1 else AGREE for h in holders.T]

    @staticmethod
    def _gallery(images: Sequence[Image.Image], labels: Sequence[str] | None = None) -> list[tuple[Image.Image, str]]:
        return [(enlarged(image), labels[i] if labels else f"#{i}") for i, image in enumerate(images)]


def load_examples(dataset: str, size: int, count: int = 24) -> tuple[list[Image.Image], list[str]]:
    """``count`` images spread over a dataset's test split (``dlc.data.load`` names, or a folder of
    images: its test/ subfolder, or every image when it has none), and the distinct captions among them."""
    from .data import load, some_items
    from .data.folder import MissingSplitError

    name = f"imagefolder:{dataset}" if ":" not in dataset and Path(dataset).is_dir() else dataset
    try:
        data = load(name, size=size, split="test")
    except MissingSplitError:  # a folder without splits: all its images are examples
        data = load(name, size=size, split="all")
    items = some_items(data, count)  # spread over the split; a stream's first images
    images = [to_pil(item["image"]) for item in items]
    captions = list(dict.fromkeys(item["caption"] for item in items if item.get("caption")))
    return images, captions


def build_app(playground: Playground) -> gr.Blocks:
    """The page: parents and their codes, the layout and weights, compositions; a prompt tab."""
    pipe = playground.pipe
    parts = [name.replace("_", " ") for name in ("encoder", "prior", "text_model") if getattr(pipe, name, None) is not None]
    with gr.Blocks(title="DLC composition playground", analytics_enabled=False) as page:
        gr.Markdown(f"## DLC composition playground\nCodes of **L = {playground.code_length}** tokens over "
                    f"**V = {playground.vocab_size}** values; this pipeline has a DiT and "
                    f"{', '.join(parts) or 'nothing that makes codes'}.")
        settings = _settings_inputs()
        with gr.Tab("Compose"):
            slots, weights = _parent_inputs()
            parent_codes = gr.HTML(elem_id="parent-codes")
            examples = _examples_gallery(playground.examples)
            with gr.Row():
                layout = gr.Textbox(label="layout: one letter per group of positions (A-D a parent, ? a random mix)",
                                    placeholder="empty: a random mix; AB: halves; ABCD: quarters; "
                                    f"{playground.code_length} letters: one per position", scale=4, elem_id="layout")
                presets = {"random mix": "", "halves": "AB", "quarters": "ABCD",
                           "alternate": ("AB" * playground.code_length)[:playground.code_length]}
                buttons = {name: gr.Button(name, size="sm", scale=0) for name in presets}
            layout_view = gr.HTML(elem_id="layout-preview")
            compose_button = gr.Button("Compose", variant="primary", elem_id="compose")
            composed = gr.Gallery(label="compositions", columns=8, format="png", elem_id="compositions",
                                  elem_classes="dlc-results")
            composed_codes = gr.HTML(elem_id="composed-codes")
        with gr.Tab("Text to image"):
            prompt = gr.Textbox(label="prompt (one per line)", placeholder="red apple", lines=2, elem_id="prompt")
            if playground.prompts:
                gr.Examples([[p] for p in playground.prompts[:12]], inputs=prompt, label="captions of the examples")
            text_button = gr.Button("Generate", variant="primary", elem_id="generate")
            texted = gr.Gallery(label="images", columns=8, format="png", elem_id="text-images",
                                elem_classes="dlc-results")
            texted_codes = gr.HTML(elem_id="text-codes")

        def show_parents(text, *images):
            return playground.parent_codes(images), playground.layout_preview(text or "", images)

        def show_layout(text, *images):
            return playground.layout_preview(text or "", images)

        def pick(a, b, c, d, evt: gr.SelectData):
            return playground.pick_example([a, b, c, d], evt.index)

        def compose_clicked(a, b, c, d, layout_text, wa, wb, wc, wd, num, seed, steps, guidance,
                            progress=gr.Progress(track_tqdm=True)):
            return playground.compose([a, b, c, d], layout_text, [wa, wb, wc, wd], Settings(num, seed, steps, guidance))[:2]

        def text_clicked(text, num, seed, steps, guidance, progress=gr.Progress(track_tqdm=True)):
            return playground.text_to_image(text, Settings(num, seed, steps, guidance))[:2]

        for slot in slots:
            slot.change(show_parents, inputs=[layout, *slots], outputs=[parent_codes, layout_view],
                        concurrency_id="model")
        if examples is not None:
            examples.select(pick, inputs=slots, outputs=slots)
        layout.change(show_layout, inputs=[layout, *slots], outputs=layout_view)
        for name, button in buttons.items():
            button.click(lambda value=presets[name]: value, outputs=layout)
        compose_button.click(compose_clicked, inputs=[*slots, layout, *weights, *settings],
                             outputs=[composed, composed_codes], concurrency_id="model")
        text_button.click(text_clicked, inputs=[prompt, *settings], outputs=[texted, texted_codes],
                          concurrency_id="model")
        page.load(show_layout, inputs=[layout, *slots], outputs=layout_view)
    return page


def serve(playground: Playground, **launch_options):
    """Build the page and serve it (``launch_options``: Gradio's, e.g. server_name, server_port, share)."""
    return build_app(playground).launch(css=PAGE_CSS, show_error=True, **launch_options)


def _parent_inputs() -> tuple[list, list]:
    """Four image slots, each with its weight in the random mix."""
    slots, weights = [], []
    with gr.Row():
        for letter in LETTERS:
            with gr.Column(min_width=120):
                slots.append(gr.Image(type="pil", image_mode=None, sources=["upload", "clipboard"], height=180,
                                      label=f"parent {letter}", elem_id=f"parent-{letter}", elem_classes="dlc-parent"))
                weights.append(gr.Slider(0, 1, value=1, step=0.05, label=f"weight of {letter} in the mix"))
    return slots, weights


def _examples_gallery(examples: Sequence[Image.Image]) -> gr.Gallery | None:
    if not examples:
        return None
    with gr.Accordion("Examples: click one to fill the next empty slot", open=True):
        return gr.Gallery([enlarged(image, 64) for image in examples], show_label=False, columns=12,
                          allow_preview=False, format="png", elem_id="examples", elem_classes="dlc-results")


def _settings_inputs() -> list:
    """Number of images, seed, steps, guidance: shared by both tabs."""
    defaults = Settings()
    with gr.Accordion("Sampling settings", open=True), gr.Row():
        return [gr.Slider(1, 16, value=defaults.num_images, step=1, label="images"),
                gr.Number(value=defaults.seed, precision=0, label="seed (image i depends on seed and i)"),
                gr.Slider(1, 250, value=defaults.steps, step=1, label="denoising steps"),
                gr.Slider(1.0, 8.0, value=defaults.guidance_scale, step=0.1, label="guidance scale")]

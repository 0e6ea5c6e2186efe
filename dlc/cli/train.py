"""``dlc train STAGE``: train one stage from a config (the same as ``python train/STAGE.py``).

``dlc train STAGE --help`` lists every config key of the stage with its default and meaning, read
from the stage's config dataclass: the field names and defaults, the ``# comment`` on (or just
above) each field's line, and each section's docstring.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import sys
import textwrap
import tokenize
import typing
from typing import Literal

import yaml

from ..config import plain, to_dict
from ..stages import STAGES


def register(sub) -> None:
    parser = sub.add_parser(
        "train", help="train a stage: " + ", ".join(STAGES),
        description="Train one stage. 'dlc train STAGE --help' lists the stage's config keys.",
    )
    stages = parser.add_subparsers(dest="stage", metavar="STAGE", title="stages", parser_class=StageParser)
    stages.required = True
    for stage in STAGES.values():
        add_stage_parser(stages, stage)


class StageParser(argparse.ArgumentParser):
    """A stage's parser, whose help ends with the stage's config keys (read only when help is shown)."""

    def __init__(self, *args, config_class: type | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.config_class = config_class

    def format_help(self) -> str:
        if self.config_class is not None:
            self.epilog = keys_help(self.config_class)
        return super().format_help()


def add_stage_parser(stages, stage) -> None:
    presets = ", ".join(sorted({n.split("/")[0] for n in stage.preset_names()}))
    parser = stages.add_parser(
        stage.name, help=stage.help, config_class=stage.config, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            f"Train {stage.help}. Settings come from --config (a YAML file or a preset name: {presets}) with "
            f"KEY=VALUE overrides, e.g. 'dlc train {stage.name} --config emoji train.steps=2000 train.lr=1e-3'. "
            "A run directory that already has a checkpoint resumes from it.", 100),
    )
    parser.add_argument("--config", default="emoji", help="YAML path or preset name (default: %(default)s)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as YAML (every valid key) and exit without training")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", type=key_value,
                        help="config overrides (dotted keys, see below)")
    parser.set_defaults(func=run)


def key_value(text: str) -> str:
    """An override as argparse checks it: a malformed one is a usage error (exit status 2)."""
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. train.lr=3e-4)")
    return text


def run(args) -> int:
    stage = STAGES[args.stage]
    config = stage.load_config(args.config, args.overrides)
    if args.print_config:
        sys.stdout.write(yaml.safe_dump(to_dict(config), sort_keys=False))
        return 0
    stage.train(config)
    return 0


def script_main(stage: str, argv: list[str] | None = None) -> int:
    """What ``train/<stage>.py`` runs: the same as ``dlc train <stage>``."""
    from . import main

    return main(["train", stage, *(argv if argv is not None else sys.argv[1:])])


# --------------------------------------------------------------------------------------------
# Config keys, read from the dataclasses


@dataclasses.dataclass(frozen=True)
class ConfigKey:
    key: str  # dotted, as an override takes it: "train.steps"
    default: object
    meaning: str  # the field's comment, with the allowed values of a Literal


def config_keys(config) -> list[ConfigKey]:
    """Every leaf key of a config dataclass instance (or class: its defaults), depth first in field order.

    Defaults are read from an instance, so a section built by a ``default_factory`` with its own
    values (the encoder's ``train.lr``) shows those."""
    config = config() if isinstance(config, type) else config
    keys = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            keys += [dataclasses.replace(k, key=f"{f.name}.{k.key}") for k in config_keys(value)]
        else:
            keys.append(ConfigKey(f.name, value, field_meaning(type(config), f.name)))
    return keys


def keys_help(config_class: type, width: int = 100) -> str:
    """The help text listing every key: one line per key (default, then meaning), sections headed
    by their docstrings."""
    lines = [textwrap.fill("config keys, set with KEY=VALUE (the dataclass default is shown; a preset changes "
                           "some: --print-config shows the resolved values):", width)]
    section = None
    for k in config_keys(config_class):
        head = k.key.rsplit(".", 1)[0] if "." in k.key else ""
        if head != section:
            section = head
            doc = section_doc(config_class, head) if head else ""
            lines.append(f"\n  {head}:" + (f" {doc}" if doc else "") if head else "")
        entry = f"    {k.key} = {yaml_value(k.default)}"
        if k.meaning:
            entry = textwrap.fill(k.meaning, width, initial_indent=f"{entry:<44} ", subsequent_indent=" " * 45)
        lines.append(entry)
    return "\n".join(lines)


def yaml_value(value) -> str:
    """``value`` as one would type it in an override (YAML flow style)."""
    text = yaml.safe_dump(plain(value), default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def section_doc(config_class: type, dotted: str) -> str:
    """The first line of the docstring of the section at ``dotted`` ("" when it has none of its own)."""
    cls = type(functools.reduce(getattr, dotted.split("."), config_class()))  # the section's dataclass
    doc = cls.__dict__.get("__doc__") or ""
    if doc.startswith(cls.__name__ + "("):  # the signature dataclasses writes in place of a docstring
        return ""
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ").replace("``", "")


def field_meaning(cls: type, name: str) -> str:
    """The comment of field ``name`` (from the class in ``cls``'s MRO that declares it), plus the
    choices when its type is a ``Literal``."""
    owner = next(c for c in cls.__mro__ if name in c.__dict__.get("__annotations__", {}))
    meaning = field_comments(owner).get(name, "")
    hint = typing.get_type_hints(owner)[name]
    if typing.get_origin(hint) is Literal:
        choices = ", ".join(map(str, typing.get_args(hint)))
        meaning = f"{meaning}; one of: {choices}" if meaning else f"one of: {choices}"
    return meaning


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """{field name: its comment}: the ``# ...`` ending the field's line, after the comment lines
    just above it."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = source.splitlines()
    out = {}
    (class_def,) = ast.parse(source).body
    fields = [n for n in class_def.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    for node in fields:  # the annotated assignments: the dataclass's fields
        above, line = [], node.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        text = " ".join([*above, comments.get(node.end_lineno, "")]).strip()
        if text:
            out[node.target.id] = text
    return out


"""The ``dlc`` command: argument parsing only, calling the library. Each verb lives in its own module
in this package and registers itself with ``register(subparsers)``; this file only finds them,
parses and reports errors.

Exit status: 0 success, 1 a failure the library reported (a ``DLCError``: printed as one line),
2 a usage error (argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from importlib import metadata

from ..errors import DLCError

# the order verbs appear in --help; modules not listed come after, alphabetically
VERB_ORDER = ["data", "train", "encode", "eval", "sample", "compose", "text2img", "fid", "demo", "toy"]

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130

EPILOG = (f"exit status: 0 on success; {EXIT_FAILURE} when the work failed (bad data, config, checkpoint or "
          f"codes: one line on stderr says what and what is expected); {EXIT_USAGE} for a usage error (an "
          f"unknown verb, option or value); {EXIT_INTERRUPTED} when interrupted (finished checkpoints are kept).")


def _command_modules():
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (VERB_ORDER.index(n) if n in VERB_ORDER else len(VERB_ORDER), n))
    return [importlib.import_module(f"{__name__}.{n}") for n in names]


def version() -> str:
    """The installed distribution's version (from its metadata, not a constant in the code)."""
    try:
        return metadata.version("dlc")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlc",
        description="Image generation with Discrete Latent Codes: train the encoder, DiT, code prior "
        "and text model, then sample, compose and evaluate. Every verb has --help.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for module in _command_modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may stand anywhere after the verb (argparse cannot interleave them
    # with options on its own)
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args) or 0
    except DLCError as e:
        print(f"dlc {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"\ndlc {args.verb}: interrupted; finished checkpoints are kept and a re-run resumes.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

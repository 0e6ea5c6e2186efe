"""Shared by the benchmarks whose JSON file collects one entry per trained run."""

import json
from pathlib import Path


def merge_into(out: str | Path, key: str, result: dict) -> None:
    """Store ``result`` under ``key`` in the JSON file ``out``, keeping the other runs' entries."""
    out = Path(out)
    everything = json.loads(out.read_text()) if out.exists() else {}
    everything[key] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(everything, indent=1) + "\n")

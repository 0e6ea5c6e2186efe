"""A battery of faults and hostile inputs against tiny runs, through the command line a user has.

Each fault is tried for real (a planted pickle, a killed training, a second training in the same
directory, a learning rate of 1e6, ...) and judged: the command must fail cleanly (a non-zero exit
and one error line, no traceback) or recover (a resume that continues), and nothing planted may
run. Prints a table fault -> outcome and writes JSON:

    python benchmarks/robustness.py --out benchmarks/results/robustness.json

About 5 minutes on 2 CPU cores (each command starts a Python process).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PRIOR = ["data.codes=synthetic:markov", "model.size=nano", "train.checkpoint_every=2", "train.log_every=1",
         "sample.num=8", "sample.steps=4", "train.keep_checkpoints=0"]


def dlc(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlc", *args], capture_output=True, text=True, timeout=timeout)


def train_prior(run: Path, *overrides: str) -> subprocess.CompletedProcess:
    return dlc("train", "prior", "--config", "emoji", *PRIOR, f"run_dir={run}", *overrides)


def clean_failure(result: subprocess.CompletedProcess, expect: str = "") -> tuple[bool, str]:
    """A non-zero exit whose error is one line (containing ``expect``), with no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("dlc ")]
    line = errors[-1] if errors else (result.stderr.strip().splitlines() or ["(no message)"])[-1]
    ok = result.returncode != 0 and "Traceback" not in result.stderr and expect in line and len(errors) == 1
    return ok, f"exit {result.returncode}: {line[:160]}"


# ---- the faults -------------------------------------------------------------------------------


def planted_pickle(root: Path):
    run = root / "pickle"
    train_prior(run, "train.steps=2")
    marker = root / "pickle-ran"
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state = run / "checkpoints" / "2" / "state.pt"
    torch.save({"step": 2, "payload": Payload()}, state)
    ok, said = clean_failure(train_prior(run, "train.steps=4"), "refused")
    return ok and not marker.exists(), said + ("; planted code ran!" if marker.exists() else "; planted code did not run")


def huge_learning_rate(root: Path):
    run = root / "lr"
    train_prior(run, "train.steps=4")
    result = train_prior(run, "train.steps=200", "train.lr=1e6", "train.grad_clip=1.0",
                         "train.allow_changed=[train.lr,train.grad_clip]")
    ok, said = clean_failure(result, "last good checkpoint")
    resumed = train_prior(run, "train.steps=6", "train.allow_changed=[train.lr,train.grad_clip]")
    return ok and resumed.returncode == 0, said + f"; re-run with the saved lr: exit {resumed.returncode}"


def changed_settings(root: Path):
    run = root / "changed"
    train_prior(run, "train.steps=2")
    before = (run / "config.yaml").read_bytes()
    ok, said = clean_failure(train_prior(run, "train.steps=4", "train.lr=0.5"), "train.lr")
    same = (run / "config.yaml").read_bytes() == before
    return ok and same, said + ("; config.yaml unchanged" if same else "; config.yaml REWRITTEN")


def second_training(root: Path):
    run = root / "twice"
    first = subprocess.Popen([sys.executable, "-m", "dlc", "train", "prior", "--config", "emoji", *PRIOR,
                              f"run_dir={run}", "train.steps=100000"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):  # until the first holds the directory
            if (run / "training.lock").exists():
                break
            time.sleep(0.5)
        ok, said = clean_failure(train_prior(run, "train.steps=100000"), f"process {first.pid}")
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
    return ok, said


def killed_and_resumed(root: Path):
    run = root / "killed"
    child = subprocess.Popen([sys.executable, "-m", "dlc", "train", "prior", "--config", "emoji", *PRIOR,
                              f"run_dir={run}", "train.steps=400"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    for _ in range(240):
        if len(list((run / "checkpoints").glob("[0-9]*"))) >= 2:
            break
        time.sleep(0.5)
    child.kill()  # kill -9: no chance to clean up (the lock stays behind)
    child.wait()
    reached = max(int(p.name) for p in (run / "checkpoints").glob("[0-9]*"))
    result = train_prior(run, f"train.steps={reached + 4}")  # a few steps past the kill: it must resume, not restart
    return result.returncode == 0, f"after kill -9 (lock left behind): exit {result.returncode}, " \
                                   f"{'resumed' if 'resuming' in result.stdout else 'did not resume'}"


def deleted_checkpoints(root: Path):
    run = root / "deleted"
    train_prior(run, "train.steps=2")
    shutil.rmtree(run / "checkpoints")
    model = {p.name: p.read_bytes() for p in (run / "model").iterdir()}
    ok, said = clean_failure(train_prior(run, "train.steps=2"), "no checkpoints/")
    kept = {p.name: p.read_bytes() for p in (run / "model").iterdir()} == model
    return ok and kept, said + ("; model/ kept" if kept else "; model/ OVERWRITTEN")


def bad_setting(override: str, expect: str):
    def fault(root: Path):
        steps = [] if override.startswith("train.steps=") else ["train.steps=2"]  # the last override wins
        return clean_failure(train_prior(root / "bad", *steps, override), expect)

    fault.__name__ = f"setting {override}"
    return fault


def float_codes(root: Path):
    np.save(root / "float.npy", np.array([[5.5, 1.0], [2.0, 3.0]]))
    return clean_failure(train_prior(root / "floats", f"data.codes={root / 'float.npy'}", "train.steps=2"),
                         "integers")


FAULTS = [planted_pickle, huge_learning_rate, changed_settings, second_training, killed_and_resumed,
          deleted_checkpoints, float_codes,
          bad_setting("train.steps=-5", "train.steps"), bad_setting("train.lr=.nan", "train.lr"),
          bad_setting("train.batch_size=0", "train.batch_size"),
          bad_setting("train.checkpoint_every=0", "train.checkpoint_every"),
          bad_setting("model.size=huge", "model.size"), bad_setting("sample.temperature=.nan", "sample.temperature")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/robustness.json", help="JSON (default: %(default)s)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="names of faults to run, each quoted (default: all; the table's names)")
    args = parser.parse_args()
    faults = {fault.__name__.replace("_", " "): fault for fault in FAULTS}
    unknown = [name for name in args.only or () if name not in faults]
    if unknown:
        parser.error(f"unknown fault {unknown[0]!r}; choose from: {', '.join(map(repr, faults))}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlc-robustness-") as tmp:
        for name, fault in faults.items():
            if args.only and name not in args.only:
                continue
            root = Path(tmp) / f"f{len(rows)}"
            root.mkdir()
            started = time.time()
            try:
                ok, outcome = fault(root)
            except subprocess.TimeoutExpired as timeout:
                ok, outcome = False, f"timed out after {timeout.timeout:.0f} s: {' '.join(timeout.cmd[3:6])}"
            rows.append({"fault": name, "ok": bool(ok), "outcome": outcome, "seconds": round(time.time() - started, 1)})
            print(f"{'ok ' if ok else 'BAD'} {name}: {outcome}", flush=True)
    print(f"\n{'fault':28s} {'ok':4s} outcome")
    for row in rows:
        print(f"{row['fault']:28s} {'yes' if row['ok'] else 'NO':4s} {row['outcome']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"faults": rows, "all_ok": all(r["ok"] for r in rows)}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

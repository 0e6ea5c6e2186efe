#!/usr/bin/env bash
# The paper recipe's GPU checks, one prepared script for whenever a GPU is at hand (about 6-8 minutes
# on one H100/H200; the parts are capped at 10 minutes together):
#   1. benchmarks/dit_speed.py: one DiT-XL/2 training step (256 px as 32x32x4 latents, the DLC512
#      code L=512 V=256, learned variance, bf16 autocast, batch $BATCH), ours against diffusers'
#      DiTTransformer2DModel of the same size, alternating in one process; the goal is ours >= $GOAL
#      times diffusers' steps/s (0.95x was measured before the float32-residual fix);
#   2. benchmarks/rehearse.py --device cuda: the README's ImageNet commands in order at a miniature
#      size, under `accelerate launch` with the shipped configs, bf16 (the presets' mixed precision),
#      each stage killed and resumed (see that file).
#
#   bash benchmarks/gpu_check.sh --prepare   # here, where pip reaches the index: the pure-Python wheels
#                                            # the GPU image lacks (diffusers, webdataset, ...) into .whl/
#   bash benchmarks/gpu_check.sh             # there: installs .whl/ (when present) into a scratch folder,
#                                            # checks the GPU and the packages, runs both parts
#
# Writes $RESULTS (default benchmarks/results)/gpu_check_dit_speed.json, gpu_check_rehearse.json and
# gpu_check.json (the summary), and copies them to $OUT when that is set (the device tool's folder).
# Exit status: 0 every check passed; 1 a part failed; 2 no GPU or a package missing (nothing ran);
# 3 both parts ran but the speed goal was missed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WHEELS=${WHEELS:-.whl}
RESULTS=${RESULTS:-benchmarks/results}
GOAL=${GOAL:-1.25}
BATCH=${BATCH:-32}
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

case "${1:-}" in
  ""|--prepare) ;;
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "gpu_check: unknown argument ${1}; the only one is --prepare (see --help)" >&2; exit 2 ;;
esac

if [ "${1:-}" = "--prepare" ]; then
  mkdir -p "$WHEELS"
  # the versions this checkout is tested with, as pure-Python wheels (they install on any Python 3)
  specs=$("$PY" - <<'EOF'
import importlib.metadata as m
print(" ".join(f"{p}=={m.version(p)}" for p in ("diffusers", "webdataset", "braceexpand", "torch-fidelity",
                                                  "importlib_metadata")))
EOF
  ) || { echo "gpu_check: cannot read the installed versions (run make install first)" >&2; exit 2; }
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" $specs || exit 2
  ls -la "$WHEELS"
  echo "carry $WHEELS to the GPU machine with the checkout and run: bash benchmarks/gpu_check.sh"
  exit 0
fi

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=$(mktemp -d /tmp/dlc-site.XXXXXX)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
    || { echo "gpu_check: installing the wheels in $WHEELS failed" >&2; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"

"$PY" - <<'EOF' || exit 2
import importlib.util
import sys

wanted = ("torch", "torchvision", "diffusers", "timm", "transformers", "accelerate", "webdataset", "braceexpand",
          "torch_fidelity", "safetensors", "peft", "tokenizers", "yaml", "PIL")
missing = [m for m in wanted if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing Python packages: {', '.join(missing)}. Here: bash benchmarks/gpu_check.sh "
             "--prepare (wheels into .whl/), then carry .whl/ along")
import dlc  # noqa: F401  (the torchvision fix first, as every entry point does)
import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check: torch.cuda.is_available() is False: this needs a CUDA GPU "
             f"(torch {torch.__version__}, CUDA {torch.version.cuda})")
print(f"gpu_check: {torch.cuda.device_count()} x {torch.cuda.get_device_name()}, torch {torch.__version__}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
EOF

started=$(date +%s)
speed_status=0
timeout 240 "$PY" benchmarks/dit_speed.py --arch DiT-XL/2 --image-size 32 --channels 4 --code-length 512 \
  --vocab-size 256 --learn-sigma --batch "$BATCH" --dtype bf16 --device cuda --warmup 3 --steps 10 \
  --goal "$GOAL" --out "$RESULTS/gpu_check_dit_speed.json" || speed_status=$?
rehearse_status=0
timeout 330 "$PY" benchmarks/rehearse.py --device cuda --out "$RESULTS/gpu_check_rehearse.json" \
  || rehearse_status=$?

"$PY" - "$RESULTS" "$speed_status" "$rehearse_status" "$(( $(date +%s) - started ))" "$GOAL" <<'EOF'
import json
import sys
from pathlib import Path

results, speed_status, rehearse_status, seconds, goal = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
summary = {"check": "benchmarks/gpu_check.sh", "seconds": seconds, "goal_speedup": goal,
           "dit_speed": {"status": speed_status}, "rehearse": {"status": rehearse_status}}
speed = results / "gpu_check_dit_speed.json"
if speed.is_file():
    run = json.loads(speed.read_text())["runs"][-1]
    summary["dit_speed"].update(device=run["device"], speedup=run["speedup_ours_vs_diffusers"],
                                goal_met=run.get("goal_met"),
                                ours_step_ms=run["results"]["ours"]["step_ms_median"],
                                diffusers_step_ms=run["results"]["diffusers"]["step_ms_median"])
rehearsal = results / "gpu_check_rehearse.json"
if rehearsal.is_file():
    r = json.loads(rehearsal.read_text())
    summary["rehearse"].update(ok=r["ok"], seconds=r["seconds"], stages={s["stage"]: s.get("seconds") for s in r["stages"]},
                               error=r.get("error") or next((s["error"] for s in r["stages"] if not s["ok"]), None))
(results / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp "$RESULTS"/gpu_check*.json "$OUT"/ 2>/dev/null || true
fi

if [ "$speed_status" -ne 0 ] && [ "$speed_status" -ne 3 ]; then
  echo "gpu_check: the DiT speed benchmark failed (exit $speed_status)" >&2; exit 1
fi
if [ "$rehearse_status" -ne 0 ]; then
  echo "gpu_check: the rehearsal failed (exit $rehearse_status): see $RESULTS/gpu_check_rehearse.json" >&2; exit 1
fi
if [ "$speed_status" -eq 3 ]; then
  echo "gpu_check: everything ran, but ours is below ${GOAL}x diffusers' steps/s" >&2; exit 3
fi
echo "gpu_check: all passed"

#!/usr/bin/env bash
# The GPU check, one call on a device machine (under 8 minutes): CUDA tests, GPU benchmarks with MFU, a short
# imagenette-gpu pretraining with its bottleneck, and the environment, written to $OUT (default: gpu-check-out).
#
#   here, once:   python scripts/make_gpu_data.py --data ../shared/data     # gpu-data/, ~35 MiB, ignored by git
#   device tool:  run(command="bash scripts/gpu_check.sh", carry=["gpu-data"], timeout_s=540)
#
# It runs the package from the checkout (PYTHONPATH=.) with the machine's own torch/timm; on a machine without a
# CUDA GPU it says so and exits 0.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}

if ! $PY -c "import torch" 2>/dev/null; then
    echo "$PY cannot import torch: set PYTHON to the interpreter that has it" >&2
    exit 1
fi
$PY - <<'PYEOF' | tee "$OUT/environment.txt"
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
PYEOF
if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA GPU here: nothing to check (the CPU checks run in CI)"
    exit 0
fi

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its output, never stop the script
    local name=$1 limit=$2; shift 2
    echo "== $name"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    echo "   exit $? ($name.txt)"; tail -n 12 "$OUT/$name.txt"
}

step cuda_tests 140 $PY -m pytest -m cuda -q -p no:cacheprovider -o addopts="-ra -s" tests/test_cuda.py
step bench_model 50 $PY -m cnx2lite bench model --amp bf16 --channels-last --batch-size 128 --iters 10
step bench_fcmae_atto 55 $PY -m cnx2lite bench fcmae --model convnextv2_atto --img-size 224 --amp bf16 \
    --backends gather dense --batch-size 128 --iters 10
step bench_fcmae_tiny 65 $PY -m cnx2lite bench fcmae --model convnextv2_tiny --img-size 224 --amp bf16 \
    --backends gather dense --batch-size 64 --iters 10
if [ -d gpu-data/imagenette/train ]; then
    step pretrain 110 $PY -m cnx2lite pretrain --preset imagenette-gpu --data gpu-data --epochs 3 --warmup-epochs 0 \
        --output "$OUT/runs" --name pretrain --no-progress --log-every-steps 10
    step loader 35 $PY - <<'PYEOF'
# The data loader alone, as the pretraining built it: if it delivers barely more than training consumed, the loader
# (decoding on the CPU cores) is the bottleneck, else the GPU is.
import csv, time
from pathlib import Path
from cnx2lite.train import load_preset
from cnx2lite.train.engine import Trainer
import os
out = Path(os.environ.get("OUT", "gpu-check-out"))
trainer = Trainer(load_preset("imagenette-gpu", task="pretrain", data="gpu-data", output=str(out / "runs"), name="loader"))
batches, images, start = iter(trainer.loader), 0, None
for i, (x, _, _) in enumerate(batches):
    if i == 5:
        start, images = time.perf_counter(), 0
    images += len(x)
    if start and time.perf_counter() - start > 20:
        break
loader = images / (time.perf_counter() - start)
rows = [r for r in csv.DictReader(open(out / "runs" / "pretrain" / "metrics.csv")) if r["kind"] == "train"]
train = max(float(r["img_per_s"]) for r in rows[len(rows) // 2:])
print(f"data loader alone {loader:.0f} img/s with {trainer.config.num_workers} workers; pretraining {train:.0f} img/s: "
      f"{'the data loader' if loader < 1.2 * train else 'the GPU'} is the bottleneck")
PYEOF
else
    echo "== pretrain skipped: no gpu-data/ (run scripts/make_gpu_data.py here and carry gpu-data)"
fi
cp "$OUT"/runs/pretrain/metrics.csv "$OUT"/pretrain_metrics.csv 2>/dev/null
rm -rf "$OUT/runs"  # checkpoints stay on the machine; at most 8 files come back
ls "$OUT"

#!/usr/bin/env bash
# GPU evidence, one call on a device machine (at most about 9 minutes on one H100): what a 2-core CPU cannot train. FCMAE
# pretraining of V1 and V2 atto on the Imagenette train split for tens of epochs (bf16), then on the val split the
# per-block collapse curves and effective rank (cnx2lite collapse), kNN top-1 (cnx2lite probe) and a K=50 fine-tune
# of each; a short report. At most 8 files come back from $OUT (default: gpu-evidence-out): report.md, collapse.csv,
# collapse-<px>px.png, pretrain_metrics.csv, and encoder-v1/ and encoder-v2/ (save_pretrained: 2 files each).
#
#   here, once:   python scripts/make_gpu_data.py --data ../shared/data     # gpu-data/ (train + val), ~44 MiB
#   device tool:  run(command="bash scripts/gpu_evidence.sh", carry=["gpu-data"], timeout_s=590)
# Each step has a time limit and all of them one deadline (BUDGET seconds, default 500, the report's time kept
# aside): a pretraining stopped by it is measured at its last checkpoint, and the report gives the epochs it reached.
#
# Without a CUDA GPU (CI) the same steps run tiny on the CPU, on a synthetic folder, and the script exits 0, so every
# step stays exercised. EVIDENCE_EPOCHS sets the pretraining epochs (GPU default 40).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
export OUT=${OUT:-gpu-evidence-out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RUNS=$WORK/runs

if $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    MODE=gpu DATA=${DATA:-gpu-data} DEVICE=cuda AMP=bf16 SIZE=96 EPOCHS=${EVIDENCE_EPOCHS:-40} BATCH=512 WORKERS=14
    PRESET=imagenette-gpu FT_PRESET=cpu FT_EPOCHS=30 SHOTS=50 IMAGES=500 LIMIT=120 RESAMPLES="1000 50"
    if [ ! -d "$DATA/imagenette/val" ]; then
        echo "no $DATA/imagenette/{train,val}: run scripts/make_gpu_data.py here and carry gpu-data" >&2
        exit 2
    fi
else  # the tiny version: every step, seconds each
    MODE=cpu-tiny DATA=$WORK/data DEVICE=cpu AMP=fp32 SIZE=64 EPOCHS=1 BATCH=8 WORKERS=0
    PRESET=smoke FT_PRESET=smoke FT_EPOCHS=1 SHOTS=4 IMAGES=4 LIMIT=300 RESAMPLES="20 3"
    $PY - "$DATA" <<'PYEOF'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for split, n in (("train", 8), ("val", 4)):
    for k in range(2):
        folder = Path(sys.argv[1]) / "imagenette" / split / f"class{k}"
        folder.mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 135, (72, 72, 3)) + np.eye(3)[k] * 120
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
PYEOF
fi
echo "gpu_evidence: $MODE, $EPOCHS pretraining epoch(s) per arm at $SIZE px, output $OUT"
LOG=$WORK/log.txt STEPS=$WORK/steps.tsv
DEADLINE=$((SECONDS + ${BUDGET:-500}))

step() {  # step NAME SECONDS COMMAND...: within its limit and the deadline; output to the log; never stops the script
    local name=$1 limit=$2; shift 2
    local left=$((DEADLINE - SECONDS))
    [ "$left" -lt "$limit" ] && limit=$left
    echo "== $name" | tee -a "$LOG"
    local start=$SECONDS
    if [ "$limit" -le 0 ]; then
        echo "   skipped: the deadline has passed" | tee -a "$LOG"
        printf '%s\t%s\t%s\n' "$name" "skipped" 0 >> "$STEPS"
        return
    fi
    timeout "$limit" "$@" >> "$LOG" 2>&1
    local status=$?
    echo "   exit $status in $((SECONDS - start)) s" | tee -a "$LOG"
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >> "$STEPS"
}

for block in v1 v2; do
    step "pretrain-$block" "$LIMIT" $PY -m cnx2lite pretrain --preset "$PRESET" --block "$block" --data "$DATA" \
        --img-size "$SIZE" --epochs "$EPOCHS" --warmup-epochs $((EPOCHS / 8)) --global-batch "$BATCH" \
        --batch-size "$BATCH" --num-workers "$WORKERS" --device "$DEVICE" --amp "$AMP" --eval-every "$EPOCHS" \
        --save-every-steps 100 --output "$RUNS" --name "pretrain-$block" --no-progress
done
read -r resamples rank_resamples <<< "$RESAMPLES"
step collapse 100 $PY -m cnx2lite collapse --data "$DATA" --img-size "$SIZE" --images "$IMAGES" --device "$DEVICE" \
    --resamples "$resamples" --rank-resamples "$rank_resamples" \
    --encoder "V1 FCMAE=$RUNS/pretrain-v1" --encoder "V2 FCMAE=$RUNS/pretrain-v2" \
    --encoder "V1 random init=random:v1" --encoder "V2 random init=random:v2" \
    --contrast "V2 FCMAE" "V1 FCMAE" --output "$WORK/collapse"
for block in v1 v2; do
    step "knn-$block" 60 $PY -m cnx2lite probe --checkpoint "$RUNS/pretrain-$block" --method knn --data "$DATA" \
        --img-size "$SIZE" --images-per-class "$SHOTS" --device "$DEVICE"
    step "finetune-$block" 90 $PY -m cnx2lite finetune --preset "$FT_PRESET" --block "$block" --data "$DATA" \
        --pretrained "$RUNS/pretrain-$block" --img-size "$SIZE" --images-per-class "$SHOTS" --epochs "$FT_EPOCHS" \
        --lr 1e-3 --warmup-epochs $(((FT_EPOCHS + 7) / 8)) --layer-decay 0.9 --rand-augment none --reprob 0 \
        --drop-path 0 --label-smoothing 0 --eval-every "$FT_EPOCHS" --device "$DEVICE" --amp "$AMP" --output "$RUNS" \
        --name "finetune-$block" --no-progress
done

$PY scripts/evidence_report.py --runs "$RUNS" --collapse "$WORK/collapse" --log "$LOG" --steps "$STEPS" --mode "$MODE" --out "$OUT"
ls "$OUT"

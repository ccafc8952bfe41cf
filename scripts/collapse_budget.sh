#!/usr/bin/env bash
# The budget question of the paper's feature-collapse claim: does V1's collapse grow (and V2's not) the longer FCMAE
# pretrains? V1 and V2 atto pretrained for 5x the cpu reproduction's budget (40 epochs at 96 px on every training
# image), with V2 blocks without GRN as the control that parts GRN from the blocks' other difference (V1's
# LayerScale), weights kept every 4 epochs, then each kept epoch measured on 500 val images by
# `cnx2lite collapse --along-training` (both points, raw and centered distance, effective rank, off channels, and how
# far GRN moves its input: does it act at all?). About 50 minutes per pretraining on 2 CPU cores; resumable: run the
# same command again to continue (a finished pretraining is skipped).
#
#   DATA=../shared/data OUTPUT=~/.cache/cnx2lite/collapse-budget bash scripts/collapse_budget.sh
#
# Settings (environment): DATA, OUTPUT (runs/ and report/ go there), EPOCHS (40), EVERY (4), SEEDS (1: pretraining
# runs per block; 2 or more put the runs into the intervals), PRESET (cpu), SIZE (96), IMAGES (500), RESAMPLES
# (1000), RANK_RESAMPLES (50), PYTHON.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUTPUT=${OUTPUT:-runs/collapse-budget} EPOCHS=${EPOCHS:-40} EVERY=${EVERY:-4} SEEDS=${SEEDS:-1}
PRESET=${PRESET:-cpu} SIZE=${SIZE:-96} IMAGES=${IMAGES:-500} RESAMPLES=${RESAMPLES:-1000}
RANK_RESAMPLES=${RANK_RESAMPLES:-50}
data=()
[ -n "${DATA:-}" ] && data=(--data "$DATA")
declare -A runs
for arm in v1 v2 v2-none; do  # v2-none: V2 blocks, nothing after the MLP's GELU
    for seed in $(seq 0 $((SEEDS - 1))); do
        name=pretrain-$arm-e$EPOCHS-p$seed
        case $arm in v2-none) norm=none ;; *) norm=auto ;; esac
        $PY -m cnx2lite pretrain --preset "$PRESET" --block "${arm%-none}" --block-norm "$norm" --epochs "$EPOCHS" \
            --keep-every-epochs "$EVERY" --images-per-class none --img-size "$SIZE" --seed "$seed" "${data[@]}" \
            --output "$OUTPUT/runs" --name "$name" --resume auto --no-progress
        runs[$arm]="${runs[$arm]:+${runs[$arm]},}$OUTPUT/runs/$name"
    done
done
$PY -m cnx2lite collapse --along-training --encoder "V1 FCMAE=${runs[v1]}" --encoder "V2 FCMAE=${runs[v2]}" \
    --encoder "V2 FCMAE, no GRN=${runs[v2-none]}" "${data[@]}" --img-size "$SIZE" --images "$IMAGES" \
    --resamples "$RESAMPLES" --rank-resamples "$RANK_RESAMPLES" \
    --output "$OUTPUT/report"

"""The report of scripts/gpu_evidence.sh: gathers its runs, collapse curves and log into at most 8 files under --out.

report.md (environment, pretraining budget and speed, kNN and K=50 fine-tuning top-1, the collapse table, each step's
exit status and the log's tail), collapse.csv and its figure, pretrain_metrics.csv (both pretrainings' rows), and each
FCMAE encoder as a save_pretrained folder (encoder-v1/, encoder-v2/: cnx2lite probe / collapse / load_model read them).
"""
from __future__ import annotations

import argparse
import csv
import platform
import re
import shutil
from pathlib import Path

import torch

from cnx2lite.factory import load_model
from cnx2lite.hub import save_pretrained

BLOCKS = ("v1", "v2")


def rows(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path))) if path.is_file() else []


def pretraining_line(runs: Path, block: str) -> str:
    metrics = rows(runs / f"pretrain-{block}" / "metrics.csv")
    epochs = [r for r in metrics if r["kind"] == "epoch"]
    train = [float(r["img_per_s"]) for r in metrics if r["kind"] == "train" and r["img_per_s"]]
    if not epochs:
        return f"| {block.upper()} | not trained | | | |"
    last = epochs[-1]
    speed = f"{sorted(train)[len(train) // 2]:.0f}" if train else "?"
    return (f"| {block.upper()} | {float(last['epoch']):.0f} | {float(last['time_s']) / 60:.1f} | {speed} | "
            f"{float(last['train_loss']):.4f} |")


def finetune_top1(runs: Path, block: str) -> str:
    evals = [r for r in rows(runs / f"finetune-{block}" / "metrics.csv") if r["kind"] == "epoch" and r["val_top1"]]
    return f"{float(evals[-1]['val_top1']):.1f}" if evals else "not trained"


def knn_top1(log: str, block: str) -> str:
    found = re.search(rf"pretrain-{block}: .*?([0-9.]+)% .*?95% interval (\[[^]]*\])", log)
    return f"{found.group(1)} {found.group(2)}" if found else "not measured"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--runs", "--collapse", "--log", "--steps", "--out"):
        parser.add_argument(flag, required=True, type=Path)
    parser.add_argument("--mode", required=True)
    args = parser.parse_args()
    log = args.log.read_text() if args.log.is_file() else ""
    args.out.mkdir(parents=True, exist_ok=True)

    for name in ("collapse.csv", *(p.name for p in sorted(args.collapse.glob("collapse-*px.png")))):
        if (args.collapse / name).is_file():
            shutil.copy(args.collapse / name, args.out / name)
    with open(args.out / "pretrain_metrics.csv", "w", newline="") as f:
        writer = None
        for block in BLOCKS:
            for row in rows(args.runs / f"pretrain-{block}" / "metrics.csv"):
                if writer is None:
                    writer = csv.DictWriter(f, ["run", *row])
                    writer.writeheader()
                writer.writerow({"run": f"pretrain-{block}", **row})
    exported = []
    for block in BLOCKS:  # a run that left no checkpoint is said so in the report, which is written regardless
        try:
            save_pretrained(load_model(args.runs / f"pretrain-{block}")[0], args.out / f"encoder-{block}")
            exported.append(f"{block.upper()}: encoder-{block}/")
        except (OSError, ValueError) as e:
            exported.append(f"{block.upper()}: not exported ({e})")

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    collapse = (args.collapse / "collapse.md").read_text() if (args.collapse / "collapse.md").is_file() else \
        "not measured\n"
    statuses = [line.split("\t") for line in args.steps.read_text().splitlines()] if args.steps.is_file() else []
    report = f"""# GPU evidence ({args.mode})

Machine: {", ".join(gpus) or "no GPU (the tiny CPU version: checks the steps, not the claims)"}; python
{platform.python_version()}, torch {torch.__version__}. Made by `scripts/gpu_evidence.sh`.

## FCMAE pretraining (atto, Imagenette train split)

| block | epochs | minutes | img/s (median step) | last train loss |
|---|---|---|---|---|
{chr(10).join(pretraining_line(args.runs, block) for block in BLOCKS)}

## Frozen and fine-tuned

kNN: the frozen encoder on every val image, its memory bank K labeled train images per class; fine-tuned: K labeled
images per class, scored on the fine-tuning preset's val images (50 per class).

| block | kNN top-1 [95% interval over images] | K-shot fine-tuned top-1 |
|---|---|---|
{chr(10).join(f"| {b.upper()} | {knn_top1(log, b)} | {finetune_top1(args.runs, b)} |" for b in BLOCKS)}

## Feature collapse (cnx2lite collapse, val images)

{collapse}
Encoders (save_pretrained folders: `cnx2lite probe --checkpoint encoder-v2`, `cnx2lite collapse --encoder
"V2=encoder-v2"`): {"; ".join(exported)}.

## Steps

| step | exit | seconds |
|---|---|---|
{chr(10).join(f"| {name} | {status} | {seconds} |" for name, status, seconds in statuses)}

<details><summary>log tail</summary>

```
{chr(10).join(log.splitlines()[-40:])}
```
</details>
"""
    (args.out / "report.md").write_text(report)


if __name__ == "__main__":
    main()

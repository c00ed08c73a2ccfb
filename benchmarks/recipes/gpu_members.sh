#!/usr/bin/env bash
# Train candidate MDX members (DenseNet121 and MobileNetV2 from scratch) side by side on one
# GPU within a fixed wall-clock budget, then pack what a lent machine may send back.
#
#   bash benchmarks/recipes/gpu_members.sh DATA OUT [BUDGET_SECONDS] [extra core.train args...]
#
# DATA: the manifest's train+val files, e.g. `python -m core.dataset copy --out .data/leukemia-all`
# (the test part never leaves this machine's disk: it is evaluated where the weights are used).
# OUT gets records.tar.gz (run.json, history.csv, meta and logs of every run), both MobileNetV2
# weights and the DenseNet121 weights with the best validation loss, split into <16 MB parts
# (a lent machine returns at most 8 files of 16 MiB). Each run's lr follows a cosine over the
# budget (core.train --time-budget), and the weights kept are those of its best validation loss.
set -u
DATA=${1:?dataset folder}; OUT=${2:?output folder}; BUDGET=${3:-380}; shift 3 || shift $#
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.2 KERAS_BACKEND=${KERAS_BACKEND:-jax}
RUNS=runs/gpu; mkdir -p "$RUNS" "$OUT"
if ! python3 -c "import keras, numpy as np; m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]); m.compile('adam', 'mse'); m.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)"; then
  echo "keras cannot train under $KERAS_BACKEND here; using torch"; export KERAS_BACKEND=torch
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 -c "import keras, sys; print(sys.version, 'keras', keras.__version__, keras.backend.backend())"; } > "$RUNS/host.txt" 2>&1
for run in densenet121:224 densenet121:160 mobilenetv2:224 mobilenetv2:160; do
  fam=${run%:*}; size=${run#*:}
  timeout $((${BUDGET%.*} + 150)) python3 -m core.train --data "$DATA" --model "$fam" --image-size "$size" \
    --out "$RUNS/$fam-$size" --batch-size 32 --lr 1e-3 --lr-schedule cosine --time-budget "$BUDGET" \
    --epochs 1000 --patience 1000 --augment stain-robust --class-weight balanced --workers 4 --verbose 2 \
    --overwrite "$@" > "$RUNS/$fam-$size.log" 2>&1 &
done
wait
tail -n 3 "$RUNS"/*.log
python3 - "$RUNS" "$OUT" <<'PY'
import csv, shutil, subprocess, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])

def best_row(run: Path) -> dict | None:
    """The epoch whose weights were kept (lowest val_loss), with its validation figures."""
    hist = run / "history.csv"
    if not (run / "run.json").exists() or not hist.exists():
        return None
    rows = list(csv.DictReader(hist.open()))
    return min(rows, key=lambda r: float(r["val_loss"])) if rows else None

dense = []
for run in sorted(p for p in runs.iterdir() if p.is_dir()):
    row = best_row(run)
    print(run.name, "unfinished" if row is None else f"best epoch {int(row['epoch']) + 1}: "
          f"val_accuracy {float(row['val_accuracy']):.4f}, val_loss {float(row['val_loss']):.4f}")
    if row is None:
        continue
    weights = next(run.glob("*-baseline.weights.h5"))
    if run.name.startswith("mobilenetv2"):
        shutil.copy(weights, out / f"{run.name}.weights.h5")
    else:
        dense.append((-float(row["val_accuracy"]), float(row["val_loss"]), run, weights))
if dense:
    *_, run, weights = min(dense)
    print("DenseNet121 sent back:", run.name)
    subprocess.run(["split", "-b", "15M", "-d", str(weights), str(out / f"{run.name}.weights.h5.part")], check=True)
PY
tar czf "$OUT/records.tar.gz" --exclude='checkpoint' --exclude='*.h5' "$RUNS"
ls -la "$OUT"

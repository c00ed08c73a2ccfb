#!/usr/bin/env bash
# Train candidate ensemble members from scratch side by side on one GPU within a fixed
# wall-clock budget, then pack what a lent machine may send back.
#
#   [MEMBERS="family:size:seed ..."] bash benchmarks/recipes/gpu_members.sh DATA OUT [BUDGET_SECONDS] [extra core.train args...]
#
# DATA: the manifest's train+val files, e.g. `python -m core.dataset copy --out .data/leukemia-all`
# (the test part never leaves this machine's disk: it is evaluated where the weights are used).
# MEMBERS defaults to the four runs of the first GPU session (DenseNet121 and MobileNetV2 at 224
# and 160 px, seed 0); at most 7, since a lent machine returns at most 8 files of 16 MiB.
# OUT gets records.tar.gz (run.json, history.csv, meta and logs of every run) and a float16 copy of
# every run's weights (python -m core.weights float16; the weights of its best validation loss).
# Each run's lr follows a cosine over the budget (core.train --time-budget).
set -u
DATA=${1:?dataset folder}; OUT=${2:?output folder}; BUDGET=${3:-380}; shift 3 || shift $#
MEMBERS=${MEMBERS:-densenet121:224:0 densenet121:160:0 mobilenetv2:224:0 mobilenetv2:160:0}
n_runs=$(wc -w <<< "$MEMBERS")
# Each process reserves its share of GPU memory up front (JAX would otherwise take 75% for the first).
XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / $n_runs, 3))")
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION KERAS_BACKEND=${KERAS_BACKEND:-jax}
RUNS=runs/gpu; mkdir -p "$RUNS" "$OUT"
can_train() { python3 -c "import keras, numpy as np; m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(), keras.layers.Dense(2)]); m.compile('adam', 'mse'); m.fit(np.zeros((4, 8, 8, 3)), np.zeros((4, 2)), verbose=0)"; }
# Leave XLA's conv autotuning on: with --xla_gpu_autotune_level=0 an H100 ran MobileNetV2 epochs at
# 26 s instead of 3.1 s and spent 6 minutes on DenseNet121's first epoch (benchmarks/results/runs/h100-seeds).
if ! can_train; then echo "keras cannot train under $KERAS_BACKEND here; using torch"; export KERAS_BACKEND=torch; fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; echo "XLA_FLAGS=${XLA_FLAGS:-}"
  python3 -c "import keras, sys; print(sys.version, 'keras', keras.__version__, keras.backend.backend())"; } > "$RUNS/host.txt" 2>&1
dirs=()
for run in $MEMBERS; do
  IFS=: read -r fam size seed <<< "$run"
  dirs+=("$RUNS/$fam-$size-s$seed")
  # Stops well before a 10-minute call would: the budget counts from the first epoch, and loading,
  # saving and packing come on top.
  timeout $((${BUDGET%.*} + 75)) python3 -m core.train --data "$DATA" --model "$fam" --image-size "$size" \
    --seed "$seed" --out "$RUNS/$fam-$size-s$seed" --batch-size 32 --lr 1e-3 --lr-schedule cosine --time-budget "$BUDGET" \
    --epochs 1000 --patience 1000 --augment stain-robust --class-weight balanced --workers 4 --verbose 2 \
    --overwrite "$@" > "$RUNS/$fam-$size-s$seed.log" 2>&1 &
done
wait
tail -n 3 "${dirs[@]/%/.log}"
# Only this call's runs: a machine kept warm between calls still has the earlier ones.
python3 - "$OUT" "${dirs[@]}" <<'PY'
import csv, subprocess, sys
from pathlib import Path
out, runs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]

for run in runs:
    hist, weights = run / "history.csv", next(run.glob("*-baseline.weights.h5"), None)
    rows = list(csv.DictReader(hist.open())) if hist.exists() else []
    if not (run / "run.json").exists() or weights is None or not rows:
        print(run.name, "unfinished")
        continue
    best = min(rows, key=lambda r: float(r["val_loss"]))  # the epoch whose weights were kept
    print(f"{run.name}: {len(rows)} epochs, best {int(best['epoch']) + 1}: val_accuracy "
          f"{float(best['val_accuracy']):.4f}, val_loss {float(best['val_loss']):.4f}")
    subprocess.run([sys.executable, "-m", "core.weights", "float16", str(weights), str(out / f"{run.name}.weights.h5")],
                   check=True)
PY
tar czf "$OUT/records.tar.gz" --exclude='checkpoint' --exclude='*.h5' "$RUNS/host.txt" "${dirs[@]}" "${dirs[@]/%/.log}"
ls -la "$OUT"

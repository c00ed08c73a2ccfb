#!/usr/bin/env bash
# The paper's zoo at the paper's protocol on one lent GPU, in one call: its six baselines and
# DEX's other two members (DenseNet-121, EfficientNet-B7) trained side by side from scratch
# (132 px, Adam 1e-4, batch 17, <= 25 epochs, patience 10), each with a deadline; each then
# evaluated on the test part there; DEX scored from its members' saved probabilities; all of it
# packed into at most 8 files (records.tar.gz, and float16 weights of runs under 16 MiB).
#
#   [FAMILIES="..."] bash benchmarks/recipes/gpu_paper_zoo.sh DATA OUT [DEADLINE_SECONDS] [extra core.train args...]
#
# DATA: a copy that travels with the code (a lent machine takes 64 MiB in all, the tracked tree
# about 43 of them, the 2,932 full-size images 62; this copy 15, the keras wheels 3): every part at
# the paper's 132 px, re-encoded,
# with its own manifest (same files and parts):
#   python -m core.dataset copy --data DIR --out .data/paper132 --parts train,val,test --image-size 132 --jpeg-quality 80
# The deadline (default 330 s) is not a change of protocol (the rate stays constant); a run it
# stops before its 25th epoch or early stop says so in run.json (`stopped_by_time_budget`).
# The lent machine has JAX but no Keras: carry the wheels (2.8 MiB), fetched here with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 namex optree
# (.whl and .data ignored by git), and run there, carrying .whl and .data/paper132 (61 MiB with the tree):
#   pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site &&
#   bash benchmarks/recipes/gpu_paper_zoo.sh .data/paper132 $OUT 330
# Smoke test on a CPU: FAMILIES="mobilenetv2 densenet121" KERAS_BACKEND=jax bash ... 60 --limit 40 --epochs 1
set -u
DATA=${1:?dataset copy with split_manifest.json}; OUT=${2:?output folder}; DEADLINE=${3:-330}
shift 3 || shift $#
FAMILIES=${FAMILIES:-vgg19 inceptionv3 mobilenetv2 xception densenet201 seresnet152 densenet121 efficientnetb7}
n_runs=$(wc -w <<< "$FAMILIES")
XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / $n_runs, 3))")
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION KERAS_BACKEND=${KERAS_BACKEND:-jax}
MANIFEST="$DATA/split_manifest.json"
RUNS=runs/gpu-paper; mkdir -p "$RUNS" "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no GPU"; nproc
  python3 -c "import keras, sys; print(sys.version, 'keras', keras.__version__, keras.backend.backend())"; } \
  > "$RUNS/host.txt" 2>&1
dirs=()
for fam in $FAMILIES; do
  dirs+=("$RUNS/$fam")
  # Loading and compiling come before the deadline's clock starts; the final save after it.
  timeout $((${DEADLINE%.*} + 150)) python3 -m core.train --data "$DATA" --manifest "$MANIFEST" --recipe paper \
    --model "$fam" --mode baseline --out "$RUNS/$fam" --time-budget "$DEADLINE" --workers 2 --verbose 2 \
    --overwrite "$@" > "$RUNS/$fam.log" 2>&1 &
done
wait
for fam in $FAMILIES; do
  [ -f "$RUNS/$fam/run.json" ] || { echo "$fam: unfinished"; continue; }
  python3 -m core.evaluate --data "$DATA" --manifest "$MANIFEST" --run "$RUNS/$fam" --split test \
    --out "$RUNS/$fam-baseline.paper.test.json" > "$RUNS/$fam.eval.log" 2>&1 &
done
wait
dex=("$RUNS/densenet121-baseline.paper.test.json" "$RUNS/efficientnetb7-baseline.paper.test.json"
     "$RUNS/xception-baseline.paper.test.json")
if ls "${dex[@]}" > /dev/null 2>&1; then
  python3 -m core.evaluate --members "${dex[@]}" --ensemble dex --out "$RUNS/dex.paper.test.json"
fi
tail -n 2 "${dirs[@]/%/.eval.log}" 2>/dev/null
# Only this call's runs; weights that fit a returned file (16 MiB) as float16 copies.
python3 - "$OUT" "${dirs[@]}" <<'PY'
import subprocess, sys
from pathlib import Path
out, runs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
for run in runs:
    weights = next(run.glob("*-baseline.weights.h5"), None)
    if weights is None:
        continue
    half = out / weights.name
    subprocess.run([sys.executable, "-m", "core.weights", "float16", str(weights), str(half)], check=True)
    if half.stat().st_size > 16 * 2**20:
        half.unlink()  # too large to come back: its evaluation came back instead
PY
tar czf "$OUT/records.tar.gz" --exclude='checkpoint' --exclude='*.h5' "$RUNS/host.txt" "${dirs[@]}" \
  "${dirs[@]/%/.log}" "$RUNS"/*.eval.log "$RUNS"/*.paper.test.json 2>/dev/null
ls -la "$OUT"

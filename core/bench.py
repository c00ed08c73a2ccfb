"""Speed benchmark: `python -m core.bench [--models NAME,...] [--quick] [--out FILE]`.

For every model with weights on this machine, on the current device: load time,
single-image latency p50/p95 (decode + preprocess + predict), batch throughput at the
best batch size, Grad-CAM time, peak memory, parameters and weights size; plus the
app's path (upload -> diagnosis + Grad-CAM, batch diagnosis against raw model.predict,
and a fresh process's time to its first prediction). Writes one JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SAMPLES = PROJECT_ROOT / "samples" / "Original"
DEFAULT_OUT = PROJECT_ROOT / "benchmarks" / "results" / "bench.json"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _sample_bytes(n: int) -> list[tuple[str, bytes]]:
    files = sorted(SAMPLES.rglob("*.jpg"))
    return [(f.name, f.read_bytes()) for f in (files * (n // max(len(files), 1) + 1))[:n]]


def _percentiles(xs: list[float]) -> dict:
    a = np.asarray(xs) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)), "n": len(xs)}


def bench_model(name: str, quick: bool) -> dict:
    """Timings for one registry entry (single model or ensemble)."""
    import keras

    from core.explain import ExplainUnavailable, class_activation_map
    from core.imageio import decode_image, to_model_input
    from core.inference import load_predictor
    from core.predict import diagnose

    rss0 = _peak_rss_mb()
    predictor = load_predictor(name)
    load_s = predictor.load_seconds
    warm_up_s = predictor.warm_up()  # what the app does in the background at start-up
    samples = _sample_bytes(20)
    reps = 10 if quick else 30
    decoded = [decode_image(b) for _, b in samples]
    # Warm-up with the measured batch shape (1): tracing/compiling a new shape is not latency.
    predictor.predict_proba(decoded[:1])
    single = []
    for i in range(reps):
        t0 = time.perf_counter()
        predictor.predict_proba([decode_image(samples[i % len(samples)][1])])
        single.append(time.perf_counter() - t0)
    throughput = {}
    for bs in ((1, 16) if quick else (1, 8, 16, 32)):
        batch = [decoded[i % len(decoded)] for i in range(bs)]
        predictor.predict_proba(batch)
        n_iter = max(2, (32 if quick else 96) // bs)
        t0 = time.perf_counter()
        for _ in range(n_iter):
            predictor.predict_proba(batch)
        throughput[str(bs)] = bs * n_iter / (time.perf_counter() - t0)
    # Raw model.predict on ready arrays vs the app's whole path (decode, smear check, predict).
    n_batch = 32 if quick else 64
    batch_files = _sample_bytes(n_batch)
    ready = {m.name: to_model_input([decode_image(b) for _, b in batch_files], m.image_size)
             for m in predictor.members}
    for m in predictor.members:
        m.model.predict(ready[m.name], batch_size=32, verbose=0)
    t0 = time.perf_counter()
    for m in predictor.members:
        m.model.predict(ready[m.name], batch_size=32, verbose=0)
    raw_ips = n_batch / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    records = diagnose(predictor, batch_files)
    app_ips = len(records) / (time.perf_counter() - t0)
    cam = {}
    try:
        m = predictor.members[0]
        times = []
        for i in range(3 if quick else 10):
            t0 = time.perf_counter()
            class_activation_map(m.model, decoded[i % len(decoded)], m.image_size, i % 4)
            times.append(time.perf_counter() - t0)
        cam = _percentiles(times)
        # Upload to diagnosis + Grad-CAM for one image, model cached: what the Diagnose page waits for.
        times = []
        for i in range(3 if quick else 10):
            t0 = time.perf_counter()
            rec = diagnose(predictor, [samples[i % len(samples)]])[0]
            if rec.probabilities:
                k = list(rec.probabilities).index(rec.label)
                for mm in predictor.members:
                    class_activation_map(mm.model, decode_image(samples[i % len(samples)][1]), mm.image_size, k)
            times.append(time.perf_counter() - t0)
        upload_to_cam = _percentiles(times)
    except ExplainUnavailable as exc:
        cam, upload_to_cam = {"unavailable": str(exc)}, {"unavailable": str(exc)}
    weights = [Path(m.weights_path) for m in predictor.members]
    return {
        "model": name,
        "load_seconds": load_s,
        "warm_up_seconds": warm_up_s,
        "single_image_latency": _percentiles(single),
        "throughput_images_per_s": throughput,
        "best_batch_size": int(max(throughput, key=throughput.get)),
        "best_throughput_images_per_s": max(throughput.values()),
        "raw_model_predict_images_per_s": raw_ips,
        "app_batch_images_per_s": app_ips,
        "app_batch_vs_raw": app_ips / raw_ips,
        "gradcam": cam,
        "upload_to_diagnosis_and_gradcam": upload_to_cam,
        "parameters": int(sum(m.model.count_params() for m in predictor.members)),
        "weights_mb": sum(p.stat().st_size for p in weights) / 2**20,
        "image_size": {m.name: m.image_size for m in predictor.members},
        "peak_rss_mb_after": _peak_rss_mb(),
        "peak_rss_growth_mb": _peak_rss_mb() - rss0,
        "keras_backend": keras.backend.backend(),
    }


FRESH_RUNS = 3  # fresh processes timed per bench (the median is the figure)


def first_prediction_seconds(name: str) -> float:
    """Wall time from starting a fresh Python process to its first diagnosis of one image
    (import, load `name`, diagnose): the wait a user of the CLI has. The process's own exit
    (TensorFlow's teardown, a second or two) comes after the answer and is not counted."""
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from core.inference import load_predictor; from core.predict import diagnose\n"
        "from pathlib import Path\n"
        "f = sorted(Path(%r).rglob('*.jpg'))[0]\n"
        "diagnose(load_predictor(%r), [(f.name, f.read_bytes())])\n"
        "import time; print(repr(time.time()), flush=True)\n"
    ) % (str(PROJECT_ROOT), str(SAMPLES), name)
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1000:])
    return float(out.stdout.strip().splitlines()[-1]) - started


def bench_pipeline(batch_size: int = 17, n_batches: int = 30, image_size: int = 132) -> dict:
    """Input pipeline (decoded images in memory -> augmented float batches) against the
    images/s of a MobileNetV2 training step on the same batches: is loading the bottleneck?"""
    import keras

    from core.augment import PAPER, STAIN_ROBUST
    from core.imageio import read_image, resize_square
    from core.loader import ImageBatches
    from core.labels import N_CLASSES
    from models.registry import build

    files = sorted(SAMPLES.rglob("*.jpg"))
    t0 = time.perf_counter()
    images = np.stack([resize_square(read_image(f), image_size) for f in files])
    decode_ips = len(files) / (time.perf_counter() - t0)
    images = np.concatenate([images] * (batch_size * n_batches // len(images) + 1))
    labels = np.arange(len(images)) % 4
    out = {"batch_size": batch_size, "image_size": image_size, "decode_and_resize_images_per_s": decode_ips}
    for name, cfg in (("paper", PAPER), ("stain-robust", STAIN_ROBUST)):
        seq = ImageBatches(images, labels, batch_size, cfg, shuffle=True)
        t0 = time.perf_counter()
        for i in range(n_batches):
            seq[i]
        out[f"augmented_batches_images_per_s_{name}"] = batch_size * n_batches / (time.perf_counter() - t0)
    model = build("mobilenetv2-baseline", N_CLASSES, input_size=image_size)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy")
    seq = ImageBatches(images, labels, batch_size)
    batches = [seq[i] for i in range(min(n_batches, 10))]
    model.train_on_batch(*batches[0])  # compile/trace
    t0 = time.perf_counter()
    for x, y in batches[1:]:
        model.train_on_batch(x, y)
    out["mobilenetv2_train_step_images_per_s"] = batch_size * (len(batches) - 1) / (time.perf_counter() - t0)
    out["pipeline_over_train_step"] = out["augmented_batches_images_per_s_paper"] / \
        out["mobilenetv2_train_step_images_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "--models", dest="models",
                   help="registry name, or several comma-separated (default: every available model)")
    p.add_argument("--quick", action="store_true", help="few repetitions, default model only (CI)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--pipeline", action="store_true",
                   help="only the input pipeline against a MobileNetV2 training step (prints JSON)")
    args = p.parse_args(argv)
    if args.pipeline:
        from core.provenance import device_name

        print(json.dumps({**bench_pipeline(), "device": device_name()}, indent=1))
        return 0

    import keras

    from core.inference import ModelUnavailable
    from core.provenance import device_name, git_commit
    from models.registry import available_models, default_model_name

    if args.models:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
    else:
        names = [default_model_name()] if args.quick else available_models()
    if not names:
        print("error: no model has weights on this machine; see the README to get or train some.",
              file=sys.stderr)
        return 2
    results = []
    for name in names:
        try:
            results.append(bench_model(name, args.quick))
            print(json.dumps({k: results[-1][k] for k in ("model", "single_image_latency",
                                                         "best_throughput_images_per_s")}), flush=True)
        except (ModelUnavailable, KeyError) as exc:
            print(f"skipped {name}: {exc}", file=sys.stderr)
    first = {}
    default = default_model_name()
    if default in names:
        # A fresh process's time varies by a third from run to run here (disk cache, the other
        # core's load): the median of several, each reported.
        try:
            runs = [round(first_prediction_seconds(default), 2) for _ in range(1 if args.quick else FRESH_RUNS)]
            first = {"model": default, "seconds": float(np.median(runs)), "runs_seconds": runs}
        except (RuntimeError, subprocess.SubprocessError) as exc:
            first = {"model": default, "error": str(exc)}
    import cv2
    import sklearn

    record = {
        "command": " ".join(["python", "-m", "core.bench", *(argv if argv is not None else sys.argv[1:])]),
        "device": device_name(), "platform": platform.platform(), "python": platform.python_version(),
        "versions": {"keras": keras.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
                     "scikit-learn": sklearn.__version__, "backend": keras.backend.backend()},
        "git_commit": git_commit(), "quick": args.quick, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fresh_process_to_first_prediction": first,
        "models": results,
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        record["versions"]["tensorflow"] = tf.__version__
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

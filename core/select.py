"""Choose the shipped default among trained candidate networks, on the validation part only.

    python -m core.select --data DIR --member LABEL=PATH.weights.h5 [--member ...] \
        [--budget-mib 40] --out benchmarks/results/val/selection.json

Every candidate is a trained weights file (its `.meta.json` beside it names the registry model and
input size). Each is run once on the manifest's validation part, on the plain images and on
grayscale copies; then every soft-voting ensemble of them (one member alone included) whose weights
files fit the budget is scored, and the project's rule picks one:

1. the highest validation accuracy; entries within one image of it stay in the running;
2. among those, the highest accuracy on its harder robustness copy: grayscale copies, and copies
   with the slide between the cells painted neutral grey and the scale bar covered (a model that
   holds without colour relies on the cell, not the stain; one that holds without the background
   relies on the cell, not the capture session: issues 11 and 13);
3. then the lowest validation log loss, then the fewest megabytes.

The test part is never read. The JSON lists every scored ensemble, so the choice can be checked.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from core.audit import neutralise
from core.augment import to_grayscale
from core.cli import data_options
from core.dataset import DatasetError, file_sha256, load_manifest, manifest_hash, manifest_part, resolve_data_dir
from core.i18n import N_
from core.labels import CLASS_FOLDERS
from core.metrics import classification_metrics

RULE = N_("highest validation accuracy; entries within one image of it stay in the running; among them the "
        "highest robust accuracy (the lower of the accuracies on grayscale copies and on copies with a neutral "
        "background and the scale bar covered); then the lowest validation log loss; then the smallest weights")


def score_ensembles(plain: dict[str, np.ndarray], gray: dict[str, np.ndarray], labels: np.ndarray,
                    sizes_mib: dict[str, float], budget_mib: float,
                    neutral: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Score every soft-voting subset of the candidates that fits `budget_mib`.

    plain, gray, neutral: label -> (N, 4) probabilities on the plain images, grayscale copies and
    neutral-background copies (`core.audit.neutralise`; None: not measured); labels: (N,) ints.
    Returns one dict per subset (members, n_errors, accuracy, grayscale_accuracy,
    neutral_background_accuracy, robust_accuracy, log_loss, benign_recall, size_mib), sorted best
    first by `RULE` (see `choose`).
    """
    rows = []
    names = sorted(plain)
    for k in range(1, len(names) + 1):
        for members in itertools.combinations(names, k):
            size = sum(sizes_mib[m] for m in members)
            if size > budget_mib:
                continue
            p = np.mean([plain[m] for m in members], axis=0)
            metrics = classification_metrics(labels, p)
            gray_acc = float((np.mean([gray[m] for m in members], axis=0).argmax(1) == labels).mean())
            neutral_acc = (float((np.mean([neutral[m] for m in members], axis=0).argmax(1) == labels).mean())
                           if neutral is not None else None)
            rows.append(dict(
                members=list(members), n_errors=int((p.argmax(1) != labels).sum()),
                accuracy=metrics["accuracy"], grayscale_accuracy=gray_acc, neutral_background_accuracy=neutral_acc,
                robust_accuracy=min(gray_acc, neutral_acc) if neutral_acc is not None else gray_acc,
                log_loss=metrics["log_loss"], benign_recall=metrics["per_class"]["Benign"]["recall"],
                size_mib=round(size, 2),
            ))
    return sorted(rows, key=lambda r: (r["n_errors"], -r["robust_accuracy"], r["log_loss"], r["size_mib"]))


def choose(rows: list[dict]) -> dict:
    """Apply `RULE` to rows from `score_ensembles`."""
    if not rows:
        raise ValueError("no candidate ensemble fits the weights budget")
    fewest = min(r["n_errors"] for r in rows)
    running = [r for r in rows if r["n_errors"] <= fewest + 1]
    return min(running, key=lambda r: (-r["robust_accuracy"], r["log_loss"], r["size_mib"]))


def main(argv: list[str] | None = None) -> int:
    from core.evaluate import read_images, stack_images
    from core.inference import _meta_path, load_single, read_meta
    from core.provenance import device_name, git_commit

    p = argparse.ArgumentParser(prog="python -m core.select", description=__doc__.split("\n\n")[0],
                                parents=[data_options()])
    p.add_argument("--member", action="append", required=True, metavar="LABEL=PATH",
                   help="a candidate: a label and its .weights.h5 (meta.json beside it); repeat")
    p.add_argument("--budget-mib", type=float, default=40.0, help="largest total size of the members' weights files")
    p.add_argument("--out", required=True, help="output JSON")
    args = p.parse_args(argv)
    try:
        members = dict(m.split("=", 1) for m in args.member)
        for label, path in members.items():
            if not Path(path).is_file():
                raise DatasetError(f"{label}: no weights file at {path}")
        root = resolve_data_dir(args.data)
        manifest = load_manifest(args.manifest)
        paths, labels = manifest_part(manifest, root, "val")
    except (ValueError, DatasetError) as exc:  # ValueError: a --member without "="
        print(f"error: {exc}", file=sys.stderr)
        return 2
    images, ok, errors = read_images(paths)
    labels = labels[ok]
    gray_images = list(to_grayscale(stack_images(images, max(im.shape[0] for im in images))))
    neutral_images = [neutralise(im) for im in images]
    plain, gray, neutral, info = {}, {}, {}, {}
    for label, path in members.items():
        path = Path(path)
        meta = read_meta(_meta_path(path))
        model = load_single(meta.get("model", ""), path)
        plain[label], gray[label] = model.predict_proba(images), model.predict_proba(gray_images)
        neutral[label] = model.predict_proba(neutral_images)
        info[label] = dict(model=model.name, image_size=model.image_size, weights=str(path),
                           sha256=file_sha256(path), size_mib=round(path.stat().st_size / 2**20, 2),
                           run=meta.get("run"), training=meta.get("training"))
        print(f"{label}: val accuracy {(plain[label].argmax(1) == labels).mean():.4f}", flush=True)
    rows = score_ensembles(plain, gray, labels, {k: v["size_mib"] for k, v in info.items()}, args.budget_mib,
                           neutral=neutral)
    chosen = choose(rows)
    record = dict(
        rule=RULE, chosen=chosen, budget_mib=args.budget_mib, split="val", n_images=int(len(labels)),
        classes=list(CLASS_FOLDERS), candidates=info, ensembles=rows, skipped=errors,
        manifest_hash=manifest_hash(manifest), data=str(root),
        command=" ".join(["python", "-m", "core.select", *(argv if argv is not None else sys.argv[1:])]),
        git_commit=git_commit(), device=device_name(), evaluated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"chosen": chosen, "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

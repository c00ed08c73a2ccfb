"""Is an image like the ones this model was validated on? A score from the model's own features.

The classifier answers one of four B-ALL classes for every smear; a normal neutrophil from
another lab gets a subtype too. `ScopeModel` measures how far an image's penultimate
features (the head's global average pool) lie from the training images': a Mahalanobis
distance (Lee et al., NeurIPS 2018) to the nearest class mean in a PCA subspace, with one
shared covariance (Ledoit-Wolf shrinkage, scikit-learn). Fitted on the manifest's train
part; the threshold is set on the validation part (and, when given, images from another lab
that must fall outside), never on the test part. It is stored beside the weights as
`<model>.scope.npz` (plain arrays, loaded with `allow_pickle=False`).

    python -m core.scope fit --data DIR --model NAME [--other-lab DIR] [--components 64]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.cli import data_options, model_option

VAL_IN_SCOPE = 0.995  # each member keeps at least this share of the validation part in scope (an
# ensemble is out of scope when any member says so, so its own share can be lower: reported by
# `core.evaluate --split val --gate`)


@dataclass(frozen=True)
class ScopeModel:
    mean: np.ndarray  # (D,) feature mean of the training images
    components: np.ndarray  # (K, D) PCA axes
    class_means: np.ndarray  # (C, K) per-class means in the PCA subspace
    precision: np.ndarray  # (K, K) inverse of the shared within-class covariance
    threshold: float  # distances above it are out of scope

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N, D) features -> (N,) Mahalanobis distance to the nearest class mean."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) @ self.components.T
        d = z[:, None, :] - self.class_means[None]  # (N, C, K)
        sq = np.einsum("nck,kl,ncl->nc", d, self.precision, d)
        return np.sqrt(np.maximum(sq.min(axis=1), 0.0))

    def ratio(self, features: np.ndarray) -> np.ndarray:
        """Distance / threshold: above 1 is out of scope."""
        return self.distance(features) / self.threshold

    def save(self, path: Path) -> None:
        np.savez(path, mean=self.mean, components=self.components, class_means=self.class_means,
                 precision=self.precision, threshold=np.float64(self.threshold))

    @classmethod
    def load(cls, path: Path) -> "ScopeModel":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["mean"], z["components"], z["class_means"], z["precision"], float(z["threshold"]))


def scope_path(weights_path: Path) -> Path:
    return Path(weights_path).with_name(Path(weights_path).name.replace(".weights.h5", ".scope.npz"))


def fit_scope(features: np.ndarray, labels: np.ndarray, n_components: int = 64) -> ScopeModel:
    """PCA + class means + shared Ledoit-Wolf covariance on training features (threshold unset: inf)."""
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float64)
    k = int(min(n_components, x.shape[0] - 1, x.shape[1]))
    pca = PCA(n_components=k, random_state=0).fit(x)
    z = pca.transform(x)
    classes = np.unique(labels)
    means = np.stack([z[labels == c].mean(axis=0) for c in classes])
    resid = z - means[np.searchsorted(classes, labels)]
    cov = LedoitWolf().fit(resid)
    return ScopeModel(pca.mean_, pca.components_, means, cov.precision_, float("inf"))


def choose_threshold(val_d: np.ndarray, val_in: float = VAL_IN_SCOPE) -> float:
    """The smallest threshold that keeps at least `val_in` of the validation images in scope
    (so, of those that do, the one that puts the most unfamiliar images out): the validation
    distances' `val_in` quantile, rounded up to an observed distance."""
    v = np.sort(np.asarray(val_d, dtype=np.float64))
    idx = min(len(v) - 1, int(np.ceil(val_in * len(v))) - 1)
    return float(v[idx])


def ensemble_ratio_limit(member_ratios: list[np.ndarray], val_in: float = VAL_IN_SCOPE) -> float:
    """An ensemble's limit on its largest member ratio (each member's validation distances over
    its own threshold): the smallest that keeps `val_in` of the validation images in scope, and
    never below 1, so an image that every member's own threshold keeps in scope stays in scope."""
    return max(1.0, choose_threshold(np.max(np.asarray(member_ratios, dtype=np.float64), axis=0), val_in))


def _features(single, images: list[np.ndarray]) -> np.ndarray:
    return single.predict_with_features(images)[1]


def main(argv: list[str] | None = None) -> int:
    from core.dataset import OTHER_LAB_ENV, DatasetError, image_files, load_manifest, manifest_hash, \
        manifest_part, resolve_data_dir
    from core.evaluate import read_images
    from core.inference import ModelUnavailable, _meta_path, load_predictor, predictor_meta_path, read_meta
    from core.provenance import device_name, git_commit

    p = argparse.ArgumentParser(prog="python -m core.scope", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit on the train part, threshold on validation; write beside the weights",
                       parents=[data_options(other_lab=True),
                                model_option(help="registry name (each member of an ensemble is fitted)")])
    f.add_argument("--components", type=int, default=64)
    args = p.parse_args(argv)
    try:
        root = resolve_data_dir(args.data)
        manifest = load_manifest(args.manifest)
        predictor = load_predictor(args.model)
        other_root = args.other_lab or os.environ.get(OTHER_LAB_ENV)
        parts = {part: manifest_part(manifest, root, part) for part in ("train", "val")}
        other = image_files(other_root) if other_root else []
    except (DatasetError, ModelUnavailable, KeyError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    imgs = {}
    for part, (paths, labels) in parts.items():
        ims, ok, _ = read_images(paths)
        imgs[part] = (ims, labels[ok])
    other_ims = read_images(other)[0] if other else []
    report, val_ratios, other_ratios = {}, [], []
    for m in predictor.members:
        t0 = time.perf_counter()
        model = fit_scope(_features(m, imgs["train"][0]), imgs["train"][1], args.components)
        val_d = model.distance(_features(m, imgs["val"][0]))
        other_d = model.distance(_features(m, other_ims)) if other_ims else None
        thr = choose_threshold(val_d)
        model = ScopeModel(model.mean, model.components, model.class_means, model.precision, thr)
        out = scope_path(m.weights_path)
        model.save(out)
        entry = dict(
            file=out.name, threshold=thr, components=int(model.components.shape[0]),
            val_in_scope=float((val_d <= thr).mean()), n_val=int(len(val_d)),
            other_lab_out_of_scope=None if other_d is None else float((other_d > thr).mean()),
            n_other_lab=len(other_ims), other_lab=str(other_root) if other_root else None,
            val_distance_quantiles={q: float(np.quantile(val_d, float(q))) for q in ("0.5", "0.9", "0.99", "1.0")},
            manifest_hash=manifest_hash(manifest), command=" ".join(["python", "-m", "core.scope", *(
                argv if argv is not None else sys.argv[1:])]), git_commit=git_commit(), device=device_name(),
            fitted=time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds=round(time.perf_counter() - t0, 1),
        )
        meta_file = _meta_path(m.weights_path)
        meta = read_meta(meta_file)
        meta["scope"] = entry
        meta_file.write_text(json.dumps(meta, indent=1) + "\n")
        report[m.name] = entry
        val_ratios.append(val_d / thr)
        if other_d is not None:
            other_ratios.append(other_d / thr)
    if predictor.is_ensemble:
        # Out of scope when the largest member ratio passes the limit, set so that the ensemble as a
        # whole keeps VAL_IN_SCOPE of the validation part (not each member, whose tails add up).
        val_max = np.max(val_ratios, axis=0)
        limit = ensemble_ratio_limit(val_ratios)
        entry = dict(ratio_limit=limit, rule=f"largest member ratio <= ratio_limit, which keeps {VAL_IN_SCOPE:.1%} "
                                            "of the validation part in scope (each member's own threshold alone "
                                            "would keep only the share below)",
                     val_in_scope=float((val_max <= limit).mean()),
                     val_in_scope_by_every_member=float((val_max <= 1.0).mean()), n_val=int(len(val_max)),
                     other_lab_out_of_scope=(float((np.max(other_ratios, axis=0) > limit).mean())
                                             if other_ratios else None),
                     command=report[predictor.members[0].name]["command"], git_commit=git_commit(),
                     fitted=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        meta_file = predictor_meta_path(predictor)
        meta = read_meta(meta_file) or {"model": predictor.name}
        meta["scope"] = entry
        meta_file.write_text(json.dumps(meta, indent=1) + "\n")
        report[predictor.name] = entry
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

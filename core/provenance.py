"""Provenance: what every result file records about how it was made.

`run_header(module, argv)` is the header of every result JSON (the command as given, the commit,
the device, the platform and the time); `device_name` and `git_commit` are its parts. One home,
so the training runs, evaluations, cross-validation, audit, benchmark and the app say the same.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from functools import lru_cache
from pathlib import Path

from core import cuda_driver_present


def device_name() -> str:
    """The accelerator Keras runs on, or the CPU model."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow" and cuda_driver_present():
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        elif backend == "jax":
            import jax

            dev = jax.devices()[0]
            if dev.platform != "cpu":
                return dev.device_kind
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
    except Exception:  # a device query must never stop training or the app
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu} ({os.cpu_count()} cores)"


def git_commit(root: str | Path | None = None) -> str:
    """The checked-out commit of `root` (default: this project), with "+uncommitted" when the code
    that makes results (files under core/ and models/ that git does not ignore) differs from it;
    $LEUKOSCOPE_GIT_COMMIT if set; "unknown" outside a git checkout."""
    # A copy of the tree without .git (a lent GPU machine) is told its commit by the caller.
    if os.environ.get("LEUKOSCOPE_GIT_COMMIT"):
        return os.environ["LEUKOSCOPE_GIT_COMMIT"]
    root = str(root or Path(__file__).resolve().parents[1])
    try:
        sha = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        if not sha:
            return "unknown"
        changed = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "core", "models"],
                                 capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+uncommitted" if changed else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_header(module: str, argv: list[str]) -> dict:
    """{command, git_commit, device, platform, finished} for a result written by `python -m module`."""
    return {"command": " ".join(["python", "-m", module, *argv]), "git_commit": git_commit(),
            "device": device_name(), "platform": platform.platform(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


@lru_cache(maxsize=64)
def _file_sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    from models.convert import file_sha256

    return file_sha256(Path(path))


def weights_sha256(path: Path) -> str:
    """SHA-256 of a weights file, hashed once per path (again only if the file was replaced): the
    identity every analysis, case and batch CSV records."""
    st = Path(path).stat()
    return _file_sha256_cached(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)

"""LeukoScope's UI-free library: data, segmentation, training, evaluation, inference."""

import os
import shutil

# The one version string: case files, the history and the PDF report record it.
__version__ = "0.5.0"


def cuda_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded (a GPU TensorFlow could use)."""
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


# TensorFlow's start-up chatter on stderr hides our own messages; users can still override it.
# Without an NVIDIA driver its only error is "failed call to cuInit", which reads as a failure on a
# laptop that simply has no GPU: there, errors are quieted too (Python exceptions still surface).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if cuda_driver_present() else "3")

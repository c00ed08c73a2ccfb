"""LeukoScope's UI-free library: data, segmentation, training, evaluation, inference."""

import os

# The one version string: case files, the history and the PDF report record it.
__version__ = "0.5.0"

# TensorFlow start-up chatter on stderr hides our own messages; users can still override it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

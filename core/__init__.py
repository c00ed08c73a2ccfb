"""LeukoScope's UI-free library: data, segmentation, training, evaluation, inference."""

import os

# TensorFlow start-up chatter on stderr hides our own messages; users can still override it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

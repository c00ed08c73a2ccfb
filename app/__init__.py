"""Small shared pieces of the LeukoScope Streamlit app (pages stay thin; the logic is in core/).

Importing this package pins the Keras backend to TensorFlow (Grad-CAM needs it) and quiets
TensorFlow's start-up log before anything imports Keras.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import core  # noqa: E402,F401 - sets TensorFlow's log level (quiet about a missing GPU) before Keras loads

PROJECT_ROOT = Path(__file__).resolve().parents[1]

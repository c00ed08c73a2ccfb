"""Small shared pieces of the LeukoScope Streamlit app (pages stay thin; the logic is in core/).

Importing this package pins the Keras backend to TensorFlow (Grad-CAM needs it) and quiets
TensorFlow's start-up log before anything imports Keras.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]

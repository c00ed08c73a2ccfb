"""The model zoo: registry, architectures and shipped weights (models/weights)."""
from models.registry import REGISTRY, ModelSpec, available_models, build, find_weights, get_spec

__all__ = ["REGISTRY", "ModelSpec", "available_models", "build", "find_weights", "get_spec"]

"""LeukoScope's UI-free library: data, segmentation, training, evaluation, inference."""

"""Images into memory once (resized uint8), then batches for Keras with on-the-fly augmentation."""
from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from core.augment import NONE, AugmentConfig, augment
from core.imageio import ImageError, read_image, resize_square
from core.labels import N_CLASSES


def load_images(paths: list[Path], size: int) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Decode and resize files to an (N_ok, size, size, 3) uint8 array.

    Returns (images, ok, errors): `ok` is a bool mask over `paths` of the files that
    decoded, `errors` lists (path, message) for the others, which are skipped, not hidden.
    """
    images, ok, errors = [], np.zeros(len(paths), dtype=bool), []
    for i, p in enumerate(paths):
        try:
            images.append(resize_square(read_image(p), size))
            ok[i] = True
        except ImageError as exc:
            errors.append((str(p), str(exc)))
    arr = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return arr, ok, errors


class ImageBatches(keras.utils.PyDataset):
    """Batches (x float32 in [0, 1] of shape (B, S, S, 3), y one-hot (B, 4)) from uint8 images.

    Augmentation is re-drawn every epoch; with `shuffle` the order is too. Seeded, so a
    run is reproducible given the same seed and the same number of epochs. `drop_remainder`
    leaves out the last, smaller batch (all batches then have one shape).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        augment_cfg: AugmentConfig = NONE,
        shuffle: bool = False,
        seed: int = 0,
        drop_remainder: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.images, self.labels = images, labels
        # Under JAX every new batch shape is another compilation of the whole train step (minutes for
        # DenseNet on a GPU); with shuffling, the images left out differ every epoch.
        self.drop_remainder = drop_remainder and len(images) >= batch_size
        self.batch_size, self.cfg, self.shuffle, self.seed = batch_size, augment_cfg, shuffle, seed
        self.epoch = 0
        self.order = np.arange(len(images))
        self._reorder()

    def _reorder(self) -> None:
        if self.shuffle:
            self.order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.images))

    def __len__(self) -> int:
        if self.drop_remainder:
            return len(self.images) // self.batch_size
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, idx: int):
        sel = self.order[idx * self.batch_size : (idx + 1) * self.batch_size]
        batch = self.images[sel]
        if self.cfg != NONE:
            rng = np.random.default_rng((self.seed, self.epoch, idx))
            batch = np.stack([augment(im, self.cfg, rng) for im in batch])
        x = batch.astype(np.float32) / 255.0
        y = keras.utils.to_categorical(self.labels[sel], N_CLASSES).astype(np.float32)
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._reorder()

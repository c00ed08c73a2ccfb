"""Read a legacy (non-zip) `torch.save` state_dict into NumPy arrays without PyTorch.

Why not `torch.load`: PyTorch is a 700 MB+ dependency (its default wheel pulls CUDA) that
the app would need only to read four files once. Why not plain `pickle.load`: a pickle can
call any importable function while it is read. This reader is a `pickle.Unpickler` whose
`find_class` resolves exactly four globals, each to a stand-in defined here
(`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`,
`torch.LongStorage`) and refuses every other name, so the file cannot make Python call
anything else; storages arrive through `persistent_load` as references that are filled
from the raw bytes after the pickles, checked against their declared sizes. Callers pin
the file's SHA-256 and check it before this reader sees a byte (see models.pretrained).

The legacy layout, as `torch.save(..., _use_new_zipfile_serialization=False)` writes it:
five pickles (magic number, protocol version, system info, the object, the storage keys)
followed, for each key in that order, by an 8-byte little-endian element count and the
storage's raw little-endian bytes.
"""
from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import LeukoScopeError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class CheckpointError(LeukoScopeError, ValueError):
    """The file is not a legacy PyTorch state_dict this reader accepts."""


@dataclass(frozen=True)
class _StorageType:
    torch_name: str
    dtype: np.dtype


_STORAGE_TYPES = {
    "FloatStorage": _StorageType("FloatStorage", np.dtype("<f4")),
    "LongStorage": _StorageType("LongStorage", np.dtype("<i8")),
}


@dataclass
class _StorageRef:
    key: str
    kind: _StorageType
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise CheckpointError(f"storage {self.storage.key} was never written")
        if any(s < 0 for s in self.shape) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise CheckpointError("negative tensor shape, stride or offset")
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) if all(self.shape) else -1
        if last >= data.size:
            raise CheckpointError(f"tensor reaches past the end of storage {self.storage.key}")
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.shape, strides=tuple(s * item for s in self.stride), writeable=False
        )
        return np.array(view)  # a contiguous copy that owns its memory


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _StorageRef):
        raise CheckpointError("a tensor refers to something that is not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a state_dict needs; every other global is refused."""

    _ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        **{("torch", name): kind for name, kind in _STORAGE_TYPES.items()},
    }

    def __init__(self, file, storages: dict[str, _StorageRef] | None = None):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(f"refused global {module}.{name} in the checkpoint") from None

    def persistent_load(self, pid):
        if self._storages is None:
            raise CheckpointError("unexpected persistent reference")
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointError(f"unsupported persistent reference {pid!r:.80}")
        _, kind, key, _location, numel, view = pid
        if not isinstance(kind, _StorageType) or view is not None:
            raise CheckpointError("unsupported storage type or storage view")
        ref = self._storages.setdefault(str(key), _StorageRef(str(key), kind, int(numel)))
        if ref.kind != kind or ref.numel != int(numel):
            raise CheckpointError(f"storage {key} declared twice with different types or sizes")
        return ref


def read_state_dict(source: Path | bytes) -> dict[str, np.ndarray]:
    """Arrays of a legacy torch state_dict, by key, in the file's order (num_batches_tracked included)."""
    raw = Path(source).read_bytes() if not isinstance(source, (bytes, bytearray)) else bytes(source)
    f = io.BytesIO(raw)
    try:
        if _RestrictedUnpickler(f).load() != LEGACY_MAGIC:
            raise CheckpointError("not a legacy torch.save file (magic number)")
        if _RestrictedUnpickler(f).load() != LEGACY_PROTOCOL:
            raise CheckpointError("unsupported torch.save protocol version")
        info = _RestrictedUnpickler(f).load()
        if not (isinstance(info, dict) and info.get("little_endian", False)):
            raise CheckpointError("only little-endian checkpoints are supported")
        storages: dict[str, _StorageRef] = {}
        obj = _RestrictedUnpickler(f, storages).load()
        keys = _RestrictedUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"unreadable checkpoint: {exc}") from None
    if not isinstance(obj, collections.OrderedDict):
        raise CheckpointError("the checkpoint does not hold a state_dict")
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise CheckpointError("storage key list does not match the tensors' storages")
    for key in keys:
        ref = storages[str(key)]
        count = int.from_bytes(f.read(8), "little")
        nbytes = count * ref.kind.dtype.itemsize
        if count != ref.numel:
            raise CheckpointError(f"storage {key}: {count} elements on disk, {ref.numel} declared")
        buf = f.read(nbytes)
        if len(buf) != nbytes:
            raise CheckpointError(f"storage {key} is truncated")
        ref.data = np.frombuffer(buf, dtype=ref.kind.dtype)
    if f.read(1):
        raise CheckpointError("unexpected bytes after the last storage")
    out = {}
    for name, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointError(f"{name} is not a tensor")
        out[str(name)] = value.materialize()
    return out

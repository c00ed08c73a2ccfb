"""Batch inputs: uploaded images and .zip archives, expanded in memory (UI-free).

A zip is read with `zipfile` from the uploaded bytes; members are read one at a time, only
when the batch gets to them, so memory stays bounded. Directories, hidden files (and macOS
`__MACOSX` metadata) and members with odd names are skipped; archives with too many members or
too much uncompressed data are refused with a plain message before anything is decompressed.
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Callable, Iterator

from core.i18n import N_, Text
from core.imageio import IMAGE_SUFFIXES, MAX_BYTES, ImageError, too_large

MAX_ZIP_MEMBERS = 2000
MAX_ZIP_TOTAL_BYTES = 500 * 2**20
MAX_NAME_LEN = 255


@dataclass
class BatchItem:
    """One file of the batch; `load()` returns its bytes, or an ImageError with a plain message."""

    name: str
    load: Callable[[], bytes | ImageError]


@dataclass
class BatchPlan:
    items: list[BatchItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # plain lines about what was skipped or refused

    def __len__(self) -> int:
        return len(self.items)

    def iter_inputs(self) -> Iterator[tuple[str, bytes | ImageError]]:
        """(name, bytes | ImageError) pairs for core.predict.diagnose, loaded lazily."""
        for item in self.items:
            try:
                data = item.load()
            except ImageError as exc:
                data = exc
            except Exception as exc:  # noqa: BLE001 - a damaged member must not stop the batch
                data = ImageError(Text(N_("Could not read this file from the archive ({error})."),
                                             error=type(exc).__name__))
            yield item.name, data


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 1024:.0f} kB"


def _skip_reason(name: str) -> str | None:
    """Why a zip member is skipped (None: keep it)."""
    if name.endswith("/"):
        return "directory"
    if not name or len(name) > MAX_NAME_LEN or not name.isprintable() or "\\" in name or name.startswith("/"):
        return "odd name"
    parts = PurePosixPath(name).parts
    if any(p in ("..", ".") for p in parts) or ":" in parts[0]:
        return "odd name"
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return "hidden"
    if PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
        return "not an image type"
    return None


def _member_loader(data: bytes, info: zipfile.ZipInfo) -> Callable[[], bytes | ImageError]:
    def load() -> bytes | ImageError:
        if info.flag_bits & 0x1:
            return ImageError(Text(N_("This file is encrypted in the archive.")))
        if info.file_size > MAX_BYTES:
            return ImageError(too_large(info.file_size))
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf, zf.open(info) as fh:
                out = fh.read(MAX_BYTES + 1)  # never more than the limit, whatever the header says
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError,
                RuntimeError) as exc:
            return ImageError(Text(N_("This file is damaged in the archive ({error})."), error=type(exc).__name__))
        if len(out) > MAX_BYTES:
            return ImageError(Text(N_("The file is larger than {limit} MB."), limit=str(MAX_BYTES // 2**20)))
        return out

    return load


def expand_zip(zip_name: str, data: bytes, plan: BatchPlan) -> None:
    """Add the image members of one archive to `plan` (or one error item for a bad archive)."""
    def refuse(msg: Text) -> None:
        err = ImageError(msg)
        plan.items.append(BatchItem(zip_name, lambda: err))

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError):
        refuse(Text(N_("This .zip file is damaged or not a zip archive.")))
        return
    if len(infos) > MAX_ZIP_MEMBERS:
        refuse(Text(N_("The archive has {count} entries; the limit is {limit}. Split it into smaller ones."),
                    count=str(len(infos)), limit=str(MAX_ZIP_MEMBERS)))
        return
    total = sum(max(i.file_size, 0) for i in infos)
    if total > MAX_ZIP_TOTAL_BYTES:
        refuse(Text(N_("The archive would unpack to {size}; the limit is {limit}. Split it into smaller ones."),
                    size=_size(total), limit=_size(MAX_ZIP_TOTAL_BYTES)))
        return
    skipped: dict[str, int] = {}
    kept = 0
    for info in infos:
        reason = _skip_reason(info.filename)
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        plan.items.append(BatchItem(f"{zip_name}/{info.filename}", _member_loader(data, info)))
        kept += 1
    if skipped:
        what = ", ".join(f"{n} × {r}" for r, n in sorted(skipped.items()))
        plan.notes.append(f"{zip_name}: skipped {what}.")
    if kept == 0:
        plan.notes.append(f"{zip_name}: no image files ({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}) inside.")


def plan_batch(uploads: list[tuple[str, bytes]]) -> BatchPlan:
    """Images and archives as uploaded -> the flat list of files to diagnose, in upload order."""
    plan = BatchPlan()
    for name, data in uploads:
        if name.lower().endswith(".zip"):
            expand_zip(name, data, plan)
        else:
            plan.items.append(BatchItem(name, (lambda d=data: d)))
    return plan

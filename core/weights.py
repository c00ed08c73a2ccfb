"""Weights files at half the size: float32 arrays stored as float16 in the same `.weights.h5` layout.

Keras casts each stored array to its variable's dtype on load, so a float16 file loads into the
usual float32 model unchanged; the network then runs in float32. Rounding the weights moves the
shipped models' class probabilities by about 1e-3 (tests/test_weights.py checks on real images),
and it is what lets two members per architecture fit the 40 MiB budget of shipped weights.

    python -m core.weights float16 SRC.weights.h5 DST.weights.h5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np


def to_float16(src: Path, dst: Path) -> None:
    """Copy the Keras weights file `src` to `dst` with every float32/float64 array stored as float16.

    Groups, attributes and non-float arrays (e.g. integer counters) are copied as they are.
    Raises ValueError when a value would overflow float16 (|x| > 65504) instead of writing inf.
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError("to_float16 writes a new file: give a destination other than the source")
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        _copy_as_float16(src, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dst)  # a crash never leaves a half-written weights file under the real name


def _copy_as_float16(src: Path, dst: Path) -> None:
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        g.attrs.update(dict(f.attrs))

        def copy(name: str, obj) -> None:
            if isinstance(obj, h5py.Group):
                g.require_group(name).attrs.update(dict(obj.attrs))
                return
            data = obj[()]
            if isinstance(data, np.ndarray) and data.dtype in (np.float32, np.float64):
                if data.size and np.abs(data).max() > np.finfo(np.float16).max:
                    raise ValueError(f"{src}: {name} has values beyond the float16 range")
                data = data.astype(np.float16)
            g.create_dataset(name, data=data).attrs.update(dict(obj.attrs))

        f.visititems(copy)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.weights", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    half = sub.add_parser("float16", help="write a float16 copy of a .weights.h5 file")
    half.add_argument("src", type=Path)
    half.add_argument("dst", type=Path)
    args = p.parse_args(argv)
    try:
        to_float16(args.src, args.dst)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.dst}: {args.dst.stat().st_size / 2**20:.2f} MiB (from {args.src.stat().st_size / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

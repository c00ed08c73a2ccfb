"""Shared command-line options, and the `leukoscope` command that gathers every CLI.

Each tool keeps its `python -m core.X` form; `leukoscope X ...` runs the same `main`. The
options every tool words the same way are defined once here, as argparse parent parsers:

    p = argparse.ArgumentParser(parents=[data_options(), model_option()])
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: `leukoscope <command>` -> (module whose `main(argv)` runs it, one line of help).
COMMANDS: dict[str, tuple[str, str]] = {
    "dataset": ("core.dataset", "dataset summary, split manifests and copies"),
    "train": ("core.train", "train zoo models (the paper's protocol or a named recipe)"),
    "evaluate": ("core.evaluate", "test-part metrics, calibration and robustness of a model"),
    "predict": ("core.predict", "diagnose image files from the command line"),
    "report": ("core.report", "a signed-off PDF report for one specimen's images"),
    "bench": ("core.bench", "speed of every available model on this machine"),
    "crossval": ("core.crossval", "session-aware (contiguous) and random k-fold cross-validation"),
    "audit": ("core.audit", "shortcut features: what a model could learn besides the cells"),
    "select": ("core.select", "choose shipped members on validation data under a size budget"),
    "scope": ("core.scope", "fit the in-scope (training-distribution) check of a model"),
    "stain": ("core.stain", "fit or evaluate Reinhard stain normalisation"),
    "weights": ("core.weights", "store trained weights as float16 for shipping"),
    "convert": ("models.convert", "convert the offline EfficientNet-Lite ImageNet checkpoints"),
    "segmentation": ("core.segmentation_tools", "evaluate or tune the HSV segmentation on a dataset"),
    "smear-check": ("core.smear_check_tools", "evaluate or fit the 'is this a stained smear' check"),
    "cells": ("core.cells_fit", "evaluate or fit the white-cell finder"),
    "i18n": ("core.i18n", "check or compile the translations"),
}

def data_options(manifest: bool = True, other_lab: bool = False) -> argparse.ArgumentParser:
    """`--data` (env-defaulted, never required), and `--manifest` / `--other-lab` where asked."""
    from core.dataset import DATA_ENV, OTHER_LAB_ENV  # here: core.dataset's own CLI uses this module

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--data", help=f"dataset root in the public layout, DIR/Original/<class>/*.jpg "
                                  f"(default: ${DATA_ENV})")
    if manifest:
        p.add_argument("--manifest", help="split manifest (default: benchmarks/split_manifest.json)")
    if other_lab:
        p.add_argument("--other-lab", help=f"smear images of another lab, DIR/<group>/*.jpg (default: ${OTHER_LAB_ENV})")
    return p


def model_option(default: str | None = "default", help: str = "registry name, or 'default' for the shipped "
                 "default") -> argparse.ArgumentParser:
    """`--model NAME` (one model; tools that take several accept a comma-separated list)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model", default=default, help=help)
    return p


def sample_options(limit_default: int | None = None,
                   limit_help: str = "a seeded random subsample of N images") -> argparse.ArgumentParser:
    """`--limit N` and `--seed S`: the same seeded subsample wherever a tool takes one."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--limit", type=int, default=limit_default, help=limit_help)
    p.add_argument("--seed", type=int, default=0, help="random seed (subsample, split, training)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    width = max(map(len, COMMANDS))
    usage = "leukoscope COMMAND [options]   (leukoscope COMMAND --help for each)\n\ncommands:\n" + "\n".join(
        f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if argv[0] in ("-V", "--version"):
        from core import __version__

        print(f"leukoscope {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n\n{usage}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())

"""Is this a stained peripheral blood smear? A cheap, explainable gate run before any diagnosis.

The classifier answers one of four B-ALL classes for *any* picture it is given: a cat, a
chest radiograph or a scanned letter would get a confident "Pro-B". `check_smear` looks at
image statistics that bright-field smears stained with any Romanowsky-type stain (Giemsa,
Wright, Leishman, May-Grünwald-Giemsa) share and most other pictures do not, and says in one
plain sentence what is off. It is a plausibility check, not a quality control of the smear.

All statistics are computed on a copy whose longer side is `WORK_SIDE` px (shape kept). The
colour statistics use optical density against the image's own background (`core.cells`),
so a white, yellowish, peach or bluish slide background and pink-red or gray-blue red cells
all count alike; what a Romanowsky stain never gives is brown, orange or yellow (light
absorbed most in the blue) or green (red and blue absorbed, green passed):

colour
  sat_p99         99th percentile of HSV saturation, 0..1 (about 0 for a grayscale picture)
  sat_mean        mean HSV saturation, 0..1 (smears are pale)
  bg_sat          saturation of the background colour (a slide's background is pale)
  stained_frac    fraction of pixels with any optical density above `STAINED_OD`
  purple_frac     fraction of Romanowsky-stained pixels: green-minus-blue optical density
                  above `STAIN_OD` (nuclei, platelets and most red cells; the map `core.cells`
                  finds nuclei with, at a lower threshold)
  brown_frac      fraction of stained pixels absorbing blue more than green (by > `HUE_MARGIN`):
                  brown, orange, yellow (skin, wood, a DAB tissue stain)
  green_frac      fraction of stained pixels absorbing green least (by > `HUE_MARGIN`)
brightness, texture, rendering
  bright_p75      75th percentile of brightness (the background of a smear is bright), 0..1
  dark_frac       fraction of pixels darker than V < 60
  hf_energy       mean absolute 4-neighbour Laplacian of the gray image / 1020, 0..1
  sharp_frac      step edges: fraction of neighbouring pixel pairs whose gray levels differ by
                  more than 80 (text, drawings, screenshots; a microscope blurs every edge)
  extreme_frac    fraction of pure white (all channels >= 250) or pure black (all <= 5) pixels
stained objects (connected components of nucleus-coloured pixels, green-minus-blue optical
density above `PURPLE_OD`, at least `_BLOB_MIN_AREA` px)
  blob_count      components covering at least 0.15% of the image each
  blob_max_frac   area of the largest component / image area
  blob_coverage   fraction of the image covered by the components

Each rule bounds one statistic; an image is a smear when every rule holds. The rules and
their bounds are data, `core/data/smear_rules.json`, written by
`python -m core.smear_check_tools fit --data DIR` from the train and val parts of the split
manifest plus one synthetic stain variant of each (hue, saturation, background tint and
magnification changed) and generated non-smears; never the test part, and never the other
lab's images, which are kept for `evaluate`. `score` is a soft version of the same rule set:
0.5 exactly at a bound, towards 1 deep inside every bound, towards 0 outside.

Grayscale images are refused by one named rule, `GRAYSCALE_RULE`: the models were trained on
stained colour images. `check_smear(rgb, allow_grayscale=True)` drops it; a grayscale image
is then judged by the rules that do not need colour only (a weaker check).

Limits: other stained cytology (a bone-marrow aspirate, an H&E section in pink and purple)
can pass; this gate does not replace a person checking what was uploaded.

Command line (the tooling lives in `core.smear_check_tools`; this entry point runs it)::

    python -m core.smear_check evaluate --data DIR [--other-lab DIR] [--out F] [--limit N]
    python -m core.smear_check fit --data DIR [--write]
"""

from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from core.cells import background_colour, optical_density
from core.i18n import N_, Text
from core.imageio import as_rgb_uint8

__all__ = [
    "WORK_SIDE",
    "RULES_PATH",
    "GRAYSCALE_RULE",
    "Rule",
    "RULES",
    "SmearCheck",
    "load_rules",
    "smear_features",
    "check_smear",
    "rejection_clause",
    "rejection_sentence",
    "energy_score",
]

WORK_SIDE = 128
RULES_PATH = Path(__file__).resolve().parent / "data" / "smear_rules.json"
GRAYSCALE_RULE = "grayscale"
STAINED_OD = 0.06  # optical density of a stained pixel (as core.cells.CellParams.stained_od)
STAIN_OD = 0.06  # green-minus-blue optical density of Romanowsky-stained pixels (purple_frac)
PURPLE_OD = 0.10  # ... of nuclear/platelet stain (the stained objects)
HUE_MARGIN = 0.03  # optical density margin for the brown/orange/yellow and green pixels
_BLOB_MIN_AREA = 10
# A blob counts for blob_count when it is at least this fraction of the image: about a
# quarter of a small lymphocyte nucleus at the training hospital's magnification.
_BLOB_COUNT_MIN_FRAC = 0.0015


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


def _work_copy(rgb: np.ndarray) -> np.ndarray:
    arr = as_rgb_uint8(rgb)
    h, w = arr.shape[:2]
    if min(h, w) < 1:
        raise ValueError(f"expected a non-empty image, got shape {arr.shape}")
    scale = WORK_SIDE / max(h, w)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(arr)


def smear_features(rgb: np.ndarray) -> dict[str, float]:
    """The statistics described in the module docstring, as plain floats."""
    img = _work_copy(rgb)
    n = float(img.shape[0] * img.shape[1])
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    s, v = hsv[..., 1], hsv[..., 2]
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)

    bg = background_colour(img)
    od = optical_density(img)
    stained = od.max(axis=2) > STAINED_OD
    brown = stained & (od[..., 2] - od[..., 1] > HUE_MARGIN)
    green = stained & (od[..., 1] < np.minimum(od[..., 0], od[..., 2]) - HUE_MARGIN)
    g_minus_b = od[..., 1] - od[..., 2]
    purple = (g_minus_b > PURPLE_OD).astype(np.uint8)

    closed = cv2.morphologyEx(purple, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    _, _, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    areas = areas[areas >= _BLOB_MIN_AREA].astype(np.float64) / n

    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=1)
    lo, hi = img.min(axis=2), img.max(axis=2)
    g16 = gray.astype(np.int16)
    steps = (np.abs(np.diff(g16, axis=1)) > 80).sum() + (np.abs(np.diff(g16, axis=0)) > 80).sum()
    return {
        "sat_p99": float(np.percentile(s, 99) / 255.0),
        "sat_mean": float(s.mean() / 255.0),
        "bg_sat": float((bg.max() - bg.min()) / bg.max()),
        "stained_frac": float(stained.mean()),
        "purple_frac": float((g_minus_b > STAIN_OD).mean()),
        "brown_frac": float(brown.mean()),
        "green_frac": float(green.mean()),
        "bright_p75": float(np.percentile(v, 75) / 255.0),
        "dark_frac": float((v < 60).mean()),
        "hf_energy": float(np.abs(lap).mean() / (4 * 255.0)),
        "sharp_frac": float(steps / n),
        "extreme_frac": float(((lo >= 250) | (hi <= 5)).mean()),
        "blob_count": float((areas >= _BLOB_COUNT_MIN_FRAC).sum()),
        "blob_max_frac": float(areas.max()) if areas.size else 0.0,
        "blob_coverage": float(areas.sum()),
    }


# Statistics that mean nothing without colour: skipped for a grayscale image when grayscale
# images are allowed.
COLOUR_FEATURES = frozenset({"sat_p99", "sat_mean", "bg_sat", "purple_frac", "brown_frac", "green_frac",
                             "blob_count", "blob_max_frac", "blob_coverage"})


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------

_EPS = 1e-4


def _logit(p: float) -> float:
    p = min(max(float(p), _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def _expit(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _log(x: float) -> float:
    return math.log(max(float(x), _EPS))


TRANSFORMS = {"logit": (_logit, _expit), "log": (_log, math.exp)}


@dataclass(frozen=True)
class Rule:
    """``feature >= bound`` (side "min") or ``feature <= bound`` (side "max").

    ``name`` is the rule's identifier (never shown to users; `rejection_sentence` turns it into
    words). ``typical`` is the median over the smears the bound was fitted on, used to scale the
    soft score; ``transform`` is the scale on which bounds were widened and margins are
    measured ("logit" for fractions, "log" for counts).
    """

    name: str
    feature: str
    side: str
    bound: float
    typical: float
    transform: str = "logit"

    def holds(self, value: float) -> bool:
        return value >= self.bound if self.side == "min" else value <= self.bound

    def margin(self, value: float) -> float:
        """Signed distance inside the bound, on the rule's transformed scale, in units of
        (typical - bound): 0 at the bound, 1 at the typical smear, negative outside."""
        t = TRANSFORMS[self.transform][0]
        x, b, m = t(value), t(self.bound), t(self.typical)
        d = x - b if self.side == "min" else b - x
        return d / (abs(m - b) or 1e-6)

    def detail(self, value: float) -> str:
        """A technical line for researchers: ``"brown_frac 0.412 > 0.127 (brown)"``."""
        op = "<" if self.side == "min" else ">"
        return f"{self.feature} {value:.4g} {op} {self.bound:.4g} ({self.name})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "feature": self.feature, "side": self.side, "bound": self.bound,
                "typical": self.typical, "transform": self.transform}


@functools.lru_cache(maxsize=4)
def _load(path: str) -> tuple[Rule, ...]:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return tuple(Rule(r["name"], r["feature"], r["side"], float(r["bound"]), float(r["typical"]),
                      r.get("transform", "logit")) for r in doc["rules"])


def load_rules(path: str | Path | None = None) -> tuple[Rule, ...]:
    """The fitted rules from `core/data/smear_rules.json` (or ``path``)."""
    p = Path(path) if path else RULES_PATH
    if not p.is_file():
        raise FileNotFoundError(f"No smear-check rules at {p}: run `python -m core.smear_check_tools fit --write`.")
    return _load(str(p.resolve()))


RULES: tuple[Rule, ...] = load_rules() if RULES_PATH.is_file() else ()


# What a hematologist reads when a rule fails: one clause per kind of problem, in the order
# they are preferred when several rules fail. Keys are rule names; `rejection_sentence` picks
# the first failed one.
_PLAIN: tuple[tuple[tuple[str, ...], str], ...] = (
    (("sharp_edges",), N_("it looks like a document, a drawing or a screenshot")),
    (("noise",), N_("it looks like noise or a fine texture rather than cells")),
    (("pure_white_black",), N_("it is mostly pure white or pure black, like a blank picture, a drawing or a screenshot")),
    ((GRAYSCALE_RULE,), N_("it is a grayscale image, and a smear is recognised by its stain colours")),
    (("too_smooth",), N_("it is blank or far out of focus")),
    (("dark_background", "dark_pixels"), N_("it is too dark for a bright-field microscope image")),
    (("vivid",), N_("its colours are far more vivid than those of a stained smear")),
    (("tinted_background",), N_("its background is strongly coloured, where a smear's is pale")),
    (("brown",), N_("it has brown, orange or yellow colours, as in a photograph or a brown-stained tissue section")),
    (("green",), N_("it has green colours, which blood smear stains do not give")),
    (("unstained", "no_purple_stain"), N_("no purple-stained cells can be seen in it")),
    (("stain_everywhere", "one_huge_stained_region", "stained_regions_cover_most"),
     N_("stain covers most of it, where a blood smear is a thin layer of separate cells")),
    (("many_specks",), N_("it has far more small stained specks than a blood smear")),
)


def rejection_clause(failed: Sequence[str]) -> str:
    """Why, in a few plain words, for the failed rules (names), e.g. "it looks like a document,
    a drawing or a screenshot"; empty when none is known."""
    for names, clause in _PLAIN:
        if any(n in failed for n in names):
            return Text(clause)
    return ""


def rejection_sentence(failed: Sequence[str]) -> str:
    """One plain sentence for the failed rules (names), e.g. "This does not look like a stained
    blood smear (it looks like a document, a drawing or a screenshot)." """
    clause = rejection_clause(failed)
    return Text(N_("This does not look like a stained blood smear ({reason})."), reason=clause) if clause else \
        Text(N_("This does not look like a stained blood smear."))


ACCEPTED_SENTENCE = N_("Stain colours, background, texture and stained cells are all within the range "
                       "of stained blood smears.")


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


@dataclass
class SmearCheck:
    """Result of `check_smear`.

    ``is_smear``: every rule holds. ``score``: 0..1, >= 0.5 exactly when ``is_smear``.
    ``reasons``: exactly one plain sentence (why it was refused, or that it passed) for the
    person who uploaded the image; ``clause``: for a refusal, the why alone, in a few lowercase
    words ("it looks like a document, a drawing or a screenshot"), to fit in another sentence. ``failed``: names of the rules that did not hold;
    ``details``: one technical line per failed rule (for researchers and reports, not for
    users); ``features``: the statistics the rules looked at.
    """

    is_smear: bool
    score: float
    reasons: list[str] = field(default_factory=list)
    features: dict[str, float] = field(default_factory=dict)
    failed: tuple[str, ...] = ()
    details: list[str] = field(default_factory=list)
    clause: str = ""

    @property
    def message(self) -> str:
        """The one sentence shown to users."""
        return self.reasons[0] if self.reasons else ""


_SCORE_SLOPE = 6.0


def check_smear(rgb: np.ndarray, rules: Sequence[Rule] | None = None, *,
                allow_grayscale: bool = False) -> SmearCheck:
    """Is ``rgb`` (HxWx3 uint8 RGB; HxW gray and RGBA accepted) a stained blood smear?

    Returns a :class:`SmearCheck`; see the module docstring for the statistics and rules.
    ``allow_grayscale`` drops `GRAYSCALE_RULE` and, for an image that rule would refuse, every
    rule on a colour statistic. Raises ValueError for arrays that are not uint8 images.
    """
    features = smear_features(rgb)
    rules = tuple(RULES if rules is None else rules)
    if not rules:
        raise FileNotFoundError(f"No smear-check rules at {RULES_PATH}: run `python -m core.smear_check_tools fit --write`.")
    if allow_grayscale:
        gray = any(r.name == GRAYSCALE_RULE and not r.holds(features[r.feature]) for r in rules)
        rules = tuple(r for r in rules if r.name != GRAYSCALE_RULE
                      and not (gray and r.feature in COLOUR_FEATURES))
    margins = [r.margin(features[r.feature]) for r in rules]
    failed = [r for r in rules if not r.holds(features[r.feature])]
    worst = min(margins) if margins else 1.0
    score = 1.0 / (1.0 + math.exp(-_SCORE_SLOPE * max(min(worst, 10.0), -10.0)))
    # Keep score and verdict consistent where a transform clamps (values at 0 or 1).
    score = min(score, 0.499) if failed else max(score, 0.5)
    names = tuple(dict.fromkeys(r.name for r in failed))
    sentence = rejection_sentence(names) if failed else Text(ACCEPTED_SENTENCE)
    return SmearCheck(not failed, score, [sentence], features, names,
                      [r.detail(features[r.feature]) for r in failed], rejection_clause(names) if failed else "")


def energy_score(logits: np.ndarray) -> np.ndarray:
    """Free energy of classifier logits, ``E(x) = -logsumexp(logits)`` over the last axis.

    For out-of-distribution detection (Liu et al., "Energy-based Out-of-distribution
    Detection", NeurIPS 2020): in-distribution inputs tend to have *lower* energy (larger
    logits), so a threshold ``E(x) > t`` flags an input the model was not trained for. Unlike
    the max softmax probability it is not saturated by one large logit. Pass raw logits (before
    softmax); with probabilities the value is meaningless. ``(N, C) -> (N,)``, ``(C,) -> ()``.
    Numerically stable for large logits. The threshold belongs to the model and must be
    chosen on validation data by the inference code.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 0 or z.shape[-1] == 0:
        raise ValueError(f"expected logits with a class axis, got shape {z.shape}")
    m = np.max(z, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    lse = np.log(np.sum(np.exp(z - m), axis=-1)) + m[..., 0]
    return -lse


if __name__ == "__main__":  # the fit/evaluate tooling, kept out of the runtime module
    from core.smear_check_tools import main

    sys.exit(main(prog="python -m core.smear_check"))

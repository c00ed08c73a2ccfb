"""Model loading, caching and the model picker.

Predictors are cached per process with `st.cache_resource`, keyed on the registry name and a
signature of the weight files (path, size, mtime), so new weights are picked up without a
restart and every session shares one copy of each network. Diagnoses and class activation
maps are cached with `st.cache_data`, keyed on the image bytes and the parameters, so moving
an unrelated widget never recomputes them.
"""
from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future

import numpy as np
import streamlit as st

from core.inference import Predictor, load_predictor
from core.labels import CLASS_NAMES
from core.predict import Diagnosis, diagnose
from models.registry import REGISTRY, default_model_name, find_weights, get_spec, how_to_get, is_available

from app.imaging import decode_for_view

Signature = tuple[tuple[str, str, int, int], ...]


def weights_signature(name: str) -> Signature:
    """(member, path, size, mtime_ns) of every weight file the model needs; () when missing."""
    spec = get_spec(name)
    out = []
    for member in spec.members or (spec.name,):
        path = find_weights(member)
        if path is None:
            return ()
        st_ = path.stat()
        out.append((member, str(path), int(st_.st_size), int(st_.st_mtime_ns)))
    return tuple(out)


def model_lists() -> tuple[list[str], list[str]]:
    """(available, unavailable) registry names, in registry order."""
    avail = [n for n in REGISTRY if is_available(n)]
    return avail, [n for n in REGISTRY if n not in avail]


PICKER_WIDTH_CHARS = 28  # about what the sidebar's select box shows of a name at laptop size


def display_name(name: str) -> str:
    return get_spec(name).display


_warming: dict[tuple[str, Signature], Future] = {}
_warming_lock = threading.Lock()


def _load_and_warm(name: str) -> Predictor:
    predictor = load_predictor(name)
    predictor.warm_up()
    return predictor


def start_warm_up(name: str | None = None) -> None:
    """Load and trace a model (default: the shipped default) in a background thread, once per
    process, so the first upload after start-up does not wait for it. Errors surface later,
    when a page asks for the model."""
    name = name or default_model_name()
    if not is_available(name):
        return
    key = (name, weights_signature(name))
    with _warming_lock:
        if key in _warming:
            return
        future: Future = Future()
        _warming[key] = future

    def run() -> None:
        try:
            future.set_result(_load_and_warm(name))
        except BaseException as exc:  # handed to the page that asks for the model
            future.set_exception(exc)

    threading.Thread(target=run, name=f"warm-up {name}", daemon=True).start()


@st.cache_resource(show_spinner="Loading the model (first use only)…", max_entries=6)
def _load(name: str, signature: Signature) -> Predictor:
    with _warming_lock:
        future = _warming.get((name, signature))
    if future is not None:
        return future.result()  # already loading since start-up: wait for that copy
    return _load_and_warm(name)


def get_predictor(name: str) -> Predictor:
    """The cached predictor of a registry name; raises ModelUnavailable with how to get it."""
    return _load(name, weights_signature(name))


@st.cache_resource(show_spinner=False)
def device() -> str:
    """The accelerator (or CPU) TensorFlow runs on, asked once per process."""
    from core.provenance import device_name

    return device_name()


def gpu_visible() -> bool:
    return not device().startswith("CPU")


@st.cache_data(show_spinner="Diagnosing…", max_entries=512)
def diagnose_one(name: str, signature: Signature, file_name: str, data: bytes, views: int = 1,
                 stain: str = "none") -> Diagnosis:
    """One image's Diagnosis (status, label, probabilities…); never raises for a bad image.
    `views=8` averages the image's 8 rotations/reflections; `stain="reinhard"` matches its colours
    to the training images first (the networks are shared, not copied)."""
    from core.stain import StainMethod

    predictor = _load(name, signature)
    if views != predictor.views or StainMethod(stain) is not predictor.stain:
        predictor = dataclasses.replace(predictor, views=views, stain=StainMethod(stain))
    return diagnose(predictor, [(file_name, data)])[0]


@st.cache_data(show_spinner="Computing the class activation map…", max_entries=256)
def cam_heat(name: str, signature: Signature, member: str, data: bytes, class_index: int,
             method: str, stain: str = "none") -> np.ndarray:
    """Grad-CAM / Grad-CAM++ heat map of one member for the view-sized image, as uint8 0..255."""
    from core.explain import class_activation_map

    predictor = _load(name, signature)
    single = next(m for m in predictor.members if m.name == member)
    rgb, _ = decode_for_view(data)
    rgb = dataclasses.replace(predictor, stain=stain).model_inputs([rgb])[0]  # what the network saw
    heat = class_activation_map(single.model, rgb, single.image_size, class_index, method)
    return (np.clip(heat, 0.0, 1.0) * 255).round().astype(np.uint8)


def model_cam(name: str, signature: Signature, data: bytes, class_index: int, method: str) -> np.ndarray:
    """The model's heat map for a class: its own, or for an ensemble the mean of its members' maps."""
    members = [m.name for m in _load(name, signature).members]
    heats = [cam_heat(name, signature, m, data, class_index, method) for m in members]
    if len(heats) == 1:
        return heats[0]
    return np.mean(np.stack(heats), axis=0).round().astype(np.uint8)


def class_index(display: str) -> int:
    return CLASS_NAMES.index(display)


def model_picker(key: str, label: str | None = None, container=st) -> str | None:
    """Selectbox over the models with weights on this machine (default: ?model= of the URL, else the
    shipped default),
    with the missing ones listed, greyed out, with how to get them. None when none is available."""
    from app.common import _

    avail, missing = model_lists()
    if not avail:
        container.error(_("No trained model weights on this machine, so no diagnosis can be made. {how}").format(
            how=how_to_get(default_model_name())))
    else:
        # ?model=<name> in the URL preselects a model (shareable links; the browser test uses it).
        wanted = st.query_params.get("model")
        default = wanted if wanted in avail else default_model_name()
        index = avail.index(default) if default in avail else 0
        picked = container.selectbox(label or _("Model"), avail, index=index, key=key, format_func=display_name,
                                     help=_("Only models whose trained weights are on this machine can be chosen."))
        if picked and len(display_name(picked)) > PICKER_WIDTH_CHARS:  # the box cuts long names off
            container.caption(display_name(picked))
    if missing:
        with container.expander(_("Not on this machine ({n})").format(n=len(missing))):
            for n in missing:
                st.markdown(f"<span style='color:#999'>{display_name(n)}</span>", unsafe_allow_html=True)
                st.caption(how_to_get(n))
    if not avail:
        return None
    chosen = st.session_state.get(key)
    return chosen if chosen in avail else avail[0]

"""English and Bangla: every marked string has a Bangla translation with the same placeholders."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.i18n import LOCALES, Language, translator

ROOT = Path(__file__).resolve().parents[1]


def marked_strings() -> set[str]:
    """What `pybabel extract -F babel.cfg` finds in the sources today."""
    from babel.messages.extract import extract_from_dir
    from babel.messages.frontend import parse_mapping_cfg

    with open(ROOT / "babel.cfg") as f:
        method_map, options_map = parse_mapping_cfg(f)
    return {msg for _, _, msg, *_ in extract_from_dir(str(ROOT), method_map, options_map) if isinstance(msg, str)}


def test_every_marked_string_is_translated_to_bangla():
    from babel.messages.pofile import read_po

    with (LOCALES / "bn" / "LC_MESSAGES" / "leukoscope.po").open("rb") as f:
        catalog = read_po(f)
    translated = {m.id for m in catalog if m.id and m.string and not m.fuzzy}
    missing = sorted(marked_strings() - translated)
    assert not missing, f"{len(missing)} strings lack a Bangla translation (pybabel update, then translate): {missing[:5]}"


def test_translations_keep_their_placeholders():
    from babel.messages.pofile import read_po

    with (LOCALES / "bn" / "LC_MESSAGES" / "leukoscope.po").open("rb") as f:
        catalog = read_po(f)
    for m in catalog:
        if m.id and m.string:
            assert set(re.findall(r"\{\w*\}", m.id)) == set(re.findall(r"\{\w*\}", m.string)), m.id


def test_translator_per_language():
    assert translator(Language.ENGLISH)("Diagnose") == "Diagnose"
    assert translator("bn")("Diagnose") == "রোগনির্ণয়"
    assert translator("bn")("a string nobody marked") == "a string nobody marked"
    with pytest.raises(ValueError):
        translator("xx")


def test_pages_switch_to_bangla():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app_pages" / "5_Batch.py"), default_timeout=120)
    at.session_state["lang"] = "bn"
    at.run()
    assert not at.exception
    assert at.title[0].value == "একসঙ্গে অনেক ছবি"
    assert any("হেমাটোলজিস্ট" in c.value for c in at.caption)  # the research-use notice


def test_no_translation_call_hides_inside_an_f_string():
    """Babel's extractor (Python 3.11) cannot see _() inside an f-string's braces: such text would
    never reach the catalog. Format a translated template instead: _("… {x}").format(x=…)."""
    import re as _re

    sources = [ROOT / "streamlit_app.py", *(ROOT / "app").glob("*.py"), *(ROOT / "app_pages").glob("*.py"),
               ROOT / "core" / "report.py", ROOT / "core" / "case.py"]
    offenders = [f"{p.name}:{i}" for p in sources for i, line in enumerate(p.read_text().splitlines(), 1)
                 if _re.search(r"""\bf["'][^"']*\{_\(""", line)]
    assert not offenders, offenders

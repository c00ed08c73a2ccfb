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


def test_the_librarys_reasons_reach_the_reader_in_bangla():
    """Reasons are composed in core as Text (English template + arguments), so the app and the report
    say them wholly in Bangla: not an English clause inside a Bangla sentence."""
    import numpy as np

    from core.i18n import message_of, translate
    from core.imageio import ImageError, decode_image
    from core.smear_check import check_smear
    from core.status import Status, explain

    with pytest.raises(ImageError) as err:
        decode_image(b"")
    assert translate(message_of(err.value), "bn") == "ফাইলটি খালি (0 বাইট)।"
    assert str(err.value) == "The file is empty (0 bytes)."  # files and logs stay English

    document = np.full((300, 300, 3), 255, np.uint8)
    document[::20] = 0  # black text lines on white paper
    check = check_smear(document)
    assert not check.is_smear
    message = explain(Status.REJECTED, check.clause)
    bangla = translate(message, "bn")
    assert bangla.startswith("এটি পেরিফেরাল ব্লাড স্মিয়ারের মতো দেখাচ্ছে না (")
    assert not re.search(r"[A-Za-z]{3,}", bangla), bangla  # no English words left over
    assert translate(message, "en") == message


def test_a_reopened_case_keeps_its_reasons_translatable():
    from case_helpers import make_image

    from core.case import Case
    from core.i18n import N_, Text, translate

    image = make_image(status="out_of_scope", label=None, confidence=None)
    image.analysis.diagnosis["message"] = Text(N_("no white cell is in view, only red cells or platelets"))
    case = Case(specimen_id="S-1")
    case.add(image)
    reopened = Case.from_json(case.to_json())
    message = reopened.images[0].analysis.message
    assert message == "no white cell is in view, only red cells or platelets"
    assert translate(message, "bn") == "দৃশ্যে কোনো শ্বেত রক্তকণিকা নেই, শুধু লোহিত রক্তকণিকা বা প্লেটলেট"


def test_a_reviewers_mistake_is_explained_in_bangla():
    from core.case import Case, NotReadyToSign
    from core.i18n import message_of, translate

    with pytest.raises(NotReadyToSign) as err:
        Case("S-1").sign("  ")
    assert translate(message_of(err.value), "bn") == "কেসে স্বাক্ষর করতে পর্যালোচকের নাম লিখুন।"

"""English and Bangla: gettext catalogs managed with Babel.

Every word the app and the report show goes through `translator(lang)`; English is the
source text. Catalogs live in `locales/<lang>/LC_MESSAGES/leukoscope.po` (committed); the
binary `.mo` is compiled from them on first use (in memory, so nothing is written next to
the code), or ahead of time by `python -m core.i18n compile`. Class names keep their
international spelling in every language (see the README's glossary).

    pybabel extract -F babel.cfg -o locales/leukoscope.pot .     # new or changed strings
    pybabel update -i locales/leukoscope.pot -d locales -D leukoscope
    python -m core.i18n compile                                    # optional: .mo files
    python -m core.i18n check                                      # every string translated?
"""
from __future__ import annotations

import enum
import gettext
import io
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

LOCALES = Path(__file__).resolve().parents[1] / "locales"
DOMAIN = "leukoscope"


class Language(str, enum.Enum):
    ENGLISH = "en"
    BANGLA = "bn"

    @property
    def native_name(self) -> str:
        return {"en": "English", "bn": "বাংলা"}[self.value]


def _po_path(lang: Language) -> Path:
    return LOCALES / lang.value / "LC_MESSAGES" / f"{DOMAIN}.po"


@lru_cache(maxsize=None)
def _translations(lang: Language) -> gettext.NullTranslations:
    if lang is Language.ENGLISH:
        return gettext.NullTranslations()
    po, mo = _po_path(lang), _po_path(lang).with_suffix(".mo")
    if mo.is_file() and (not po.is_file() or mo.stat().st_mtime >= po.stat().st_mtime):
        with mo.open("rb") as f:
            return gettext.GNUTranslations(f)
    if not po.is_file():
        return gettext.NullTranslations()
    return gettext.GNUTranslations(io.BytesIO(_compile(po)))


def _compile(po: Path) -> bytes:
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po.open("rb") as f:
        catalog = read_po(f)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    return buf.getvalue()


def translator(lang: Language | str = Language.ENGLISH) -> Callable[[str], str]:
    """The gettext function of a language: English text in, the language's text out."""
    return _translations(Language(lang)).gettext


def N_(template: str) -> str:
    """Marks text for translation where it is defined (pybabel finds it); it is translated where shown."""
    return template


class Text(str):
    """English text that remembers how it was made, so that a page or a report can say it in
    another language: a template marked with `N_` and its arguments (plain strings or numbers,
    already formatted, or Text themselves). It *is* the English string, so files, logs and
    comparisons see plain English; `translate` renders it in any language.

        Text(N_("The file is {size} MB; the limit is {limit} MB."), size="73", limit="50")
    """

    template: str
    args: dict[str, Any]

    def __new__(cls, template: str, **args: Any) -> "Text":
        self = super().__new__(cls, template.format(**args) if args else template)
        self.template, self.args = template, args
        return self

    def __reduce__(self):  # copy, deepcopy (dataclasses.asdict) and pickle keep the template
        return (_text_from_parts, (self.template, self.args))

    def to_parts(self) -> dict[str, Any]:
        """A JSON-safe form that `Text.from_parts` turns back into the same Text."""
        return {"template": self.template,
                "args": {k: v.to_parts() if isinstance(v, Text) else v for k, v in self.args.items()}}

    @classmethod
    def from_parts(cls, parts: dict[str, Any]) -> "Text":
        args = {k: cls.from_parts(v) if isinstance(v, dict) else v for k, v in parts.get("args", {}).items()}
        return cls(parts["template"], **args)


def _text_from_parts(template: str, args: dict[str, Any]) -> Text:
    return Text(template, **args)


def message_of(exc: BaseException) -> str:
    """An exception's message, keeping it a `Text` when it was raised with one (str(exc) would not)."""
    return exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], Text) else str(exc)


def translate(text: str, lang: Language | str = Language.ENGLISH) -> str:
    """`text` in `lang`: a `Text` is rebuilt from its translated template and arguments; other
    text is looked up whole in the catalog (unchanged when it is not there)."""
    return render(text, translator(lang))


def render(text: str, gettext: Callable[[str], str]) -> str:
    """`translate` with a gettext function (as `translator` returns) instead of a language."""
    if isinstance(text, Text):
        args = {k: render(v, gettext) if isinstance(v, str) else v for k, v in text.args.items()}
        return gettext(text.template).format(**args) if args else gettext(text.template)
    return gettext(text) if text else text


def untranslated(lang: Language | str) -> list[str]:
    """Message ids of the catalog with no (or a fuzzy) translation."""
    from babel.messages.pofile import read_po

    with _po_path(Language(lang)).open("rb") as f:
        catalog = read_po(f)
    return [m.id for m in catalog if m.id and (not m.string or m.fuzzy)]


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m core.i18n", description="Check or compile the translations.")
    p.add_argument("cmd", nargs="?", choices=["check", "compile"], default="check",
                   help="check: list untranslated strings (exit 1 if any); compile: write the .mo files")
    cmd = p.parse_args(argv).cmd
    langs = [lang for lang in Language if lang is not Language.ENGLISH]
    if cmd == "compile":
        for lang in langs:
            po = _po_path(lang)
            po.with_suffix(".mo").write_bytes(_compile(po))
            print(f"wrote {po.with_suffix('.mo')}")
        return 0
    missing = {lang.value: untranslated(lang) for lang in langs}
    for lang, ids in missing.items():
        print(f"{lang}: {len(ids)} untranslated" + "".join(f"\n  {i!r}" for i in ids[:20]))
    return 1 if any(missing.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The one closed set of outcomes an image can have, from the least to the most usable.

Every caller (CLI JSON/CSV, the Diagnose, Compare and Batch pages) uses these members; the
values are the strings written to files. `Status` subclasses `str`, so a record's status
compares equal to its value and serialises as it.
"""
from __future__ import annotations

from enum import Enum

from core.i18n import N_, Text


class Status(str, Enum):
    ERROR = "error"  # the file cannot be used (not an image, truncated, too large...)
    REJECTED = "rejected"  # not a stained peripheral blood smear: no diagnosis
    OUT_OF_SCOPE = "out_of_scope"  # a smear, but unlike any image the model was validated on: no subtype
    UNCERTAIN = "uncertain"  # in scope, confidence below the validated threshold: refer for review
    OK = "ok"  # in scope and confident

    def __str__(self) -> str:
        return self.value

    @property
    def gives_subtype(self) -> bool:
        """Whether a class is reported as the answer (uncertain ones only as a suggestion)."""
        return self in (Status.OK, Status.UNCERTAIN)


#: The word a page, the report or the audit trail shows for each status (the README's glossary).
WORDS = {
    Status.ERROR: N_("error"),
    Status.REJECTED: N_("rejected"),
    Status.OUT_OF_SCOPE: N_("out of scope"),
    Status.UNCERTAIN: N_("uncertain"),
    Status.OK: N_("ok"),
}

HEADLINES = {
    Status.ERROR: N_("The file could not be used."),
    Status.REJECTED: N_("This does not look like a peripheral blood smear — no diagnosis given."),
    Status.OUT_OF_SCOPE: N_("A blood smear, but unlike any image this model was validated on — no subtype given."),
    Status.UNCERTAIN: N_("Uncertain — refer this smear to a hematologist for manual review."),
    Status.OK: "",
}


_WITH_REASON = {
    Status.REJECTED: N_("This does not look like a peripheral blood smear ({reason}) — no diagnosis given."),
    Status.OUT_OF_SCOPE: N_("A blood smear, but unlike any image this model was validated on ({reason}) — no "
                            "subtype given."),
    Status.UNCERTAIN: N_("Uncertain ({reason}) — refer this smear to a hematologist for manual review."),
}


def explain(status: Status, clause: str = "") -> Text:
    """The one sentence a user reads: the status's headline with its reason, a lowercase
    clause such as "no white cell is in view", inside it (a `Text`, so pages can translate it)."""
    if clause and status in _WITH_REASON:
        return Text(_WITH_REASON[status], reason=clause if isinstance(clause, Text) else clause.rstrip("."))
    return Text(HEADLINES[status])

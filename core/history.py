"""The local case history: cases, their images and an append-only audit trail in SQLite.

The database lives in the user's data folder (`default_history_dir()`), never in the project
folder, and is created only when a store is opened. Its schema carries a version
(`PRAGMA user_version`); `MIGRATIONS` lists the steps from version 0 on, and opening a store
applies the missing ones in one transaction. To change the schema, append a step: never edit
a released one, since databases out there were built by it.

Each case is stored whole as its JSON (`core.case.Case.to_dict`, without the uploads' bytes),
beside the columns the list and search need. The uploads themselves are stored (in
`images.image`) only when the user keeps images; the 256 px thumbnails the report prints are
part of the case's JSON. Every save appends audit rows saying what changed, and triggers refuse
to update or delete audit rows, or to change a signed case.
"""
from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from core.case import Addendum, Case, CaseFrozen, CaseStatus, display_time, now_utc
from core.errors import LeukoScopeError
from core.i18n import N_, Text
from core.labels import DISPLAY_NAMES
from core.status import WORDS, Status

APP_NAME = "LeukoScope"
DB_NAME = "cases.sqlite3"

# One tuple of statements per schema version; MIGRATIONS[n] takes a database from version n to n + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the tables, and triggers that keep the audit trail append-only and signed cases unchanged
        """CREATE TABLE cases (
            case_id TEXT PRIMARY KEY,
            specimen_id TEXT NOT NULL,
            patient_ref TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            signed_by TEXT,
            signed_at TEXT,
            json TEXT NOT NULL)""",
        """CREATE TABLE images (
            case_id TEXT NOT NULL REFERENCES cases(case_id),
            idx INTEGER NOT NULL,
            file_name TEXT NOT NULL,
            image_sha256 TEXT NOT NULL,
            image BLOB,
            PRIMARY KEY (case_id, idx))""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            case_id TEXT NOT NULL,
            at TEXT NOT NULL,
            who TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '')""",
        """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
        """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
            BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END""",
        """CREATE TRIGGER signed_case_no_update BEFORE UPDATE ON cases WHEN OLD.status = 'signed'
            BEGIN SELECT RAISE(ABORT, 'a signed case cannot change'); END""",
        """CREATE TRIGGER signed_case_no_delete BEFORE DELETE ON cases WHEN OLD.status = 'signed'
            BEGIN SELECT RAISE(ABORT, 'a signed case cannot change'); END""",
        """CREATE TRIGGER signed_images_no_update BEFORE UPDATE ON images
            WHEN (SELECT status FROM cases WHERE case_id = OLD.case_id) = 'signed'
            BEGIN SELECT RAISE(ABORT, 'a signed case cannot change'); END""",
        """CREATE TRIGGER signed_images_no_delete BEFORE DELETE ON images
            WHEN (SELECT status FROM cases WHERE case_id = OLD.case_id) = 'signed'
            BEGIN SELECT RAISE(ABORT, 'a signed case cannot change'); END""",
    ),
    (  # 2: the history page searches by specimen and reads one case's audit trail
        "CREATE INDEX cases_specimen ON cases(specimen_id)",
        "CREATE INDEX audit_case ON audit(case_id, id)",
    ),
    (  # 3: addenda to signed cases, append-only like the audit trail (the signed case itself never changes)
        """CREATE TABLE addenda (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            case_id TEXT NOT NULL REFERENCES cases(case_id),
            at TEXT NOT NULL,
            who TEXT NOT NULL,
            text TEXT NOT NULL)""",
        "CREATE INDEX addenda_case ON addenda(case_id, id)",
        """CREATE TRIGGER addenda_no_update BEFORE UPDATE ON addenda
            BEGIN SELECT RAISE(ABORT, 'addenda are append-only'); END""",
        """CREATE TRIGGER addenda_no_delete BEFORE DELETE ON addenda
            BEGIN SELECT RAISE(ABORT, 'addenda are append-only'); END""",
        """CREATE TRIGGER addenda_only_to_signed BEFORE INSERT ON addenda
            WHEN (SELECT status FROM cases WHERE case_id = NEW.case_id) IS NOT 'signed'
            BEGIN SELECT RAISE(ABORT, 'an addendum is added to a signed case'); END""",
    ),
    (  # 4: how each audit detail was worded (core.i18n.Text parts, JSON), so the page can say it in Bangla;
        # `detail` keeps the English sentence as written. Older rows have none and show `detail` as is.
        "ALTER TABLE audit ADD COLUMN detail_parts TEXT",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class HistoryError(LeukoScopeError, ValueError):
    """The case history cannot do what was asked; the message is one sentence shown as is."""


class CaseNotFound(HistoryError):
    """No case with this ID in the history."""


def default_history_dir() -> Path:
    """The per-user folder for the case history (platformdirs' user data folder, never the project)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False)) / "history"


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring an autocommit connection's database up to schema `target` in one transaction; returns
    the version it was at. Raises HistoryError for a database newer than this app."""
    conn.execute("BEGIN IMMEDIATE")  # re-read under the write lock: two processes may open it at once
    try:
        found = schema_version(conn)
        if found > SCHEMA_VERSION:
            raise HistoryError(Text(N_("This case history was written by a newer LeukoScope; update the app to "
                                       "open it.")))
        for version in range(found, target):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        if target > found:
            conn.execute(f"PRAGMA user_version = {int(target)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found


def _review_text(review: dict | None) -> Text:
    if not review:
        return Text(N_("undecided"))
    label = review.get("final_label")
    label = DISPLAY_NAMES.get(label, label)
    if review["decision"] == "unusable" or not label:
        return Text(N_("unusable")) if review["decision"] == "unusable" else Text(review["decision"])
    if review["decision"] == "reclassified":
        return Text(N_("reclassified as {label}"), label=label)
    return Text(N_("confirmed as {label}"), label=label)


def _review_key(review: dict | None) -> tuple | None:
    return (review["decision"], review.get("final_label"), review.get("reason") or "") if review else None


def changes(old: dict | None, new: dict) -> list[tuple[str, str]]:
    """(action, detail) audit entries describing how case dict `new` differs from `old` (None: new
    case). A detail the app words is a `core.i18n.Text` (English, translatable); the reviewer's own
    words (an impression, an addendum) are stored as typed."""
    events: list[tuple[str, str]] = []
    if old is None:
        events.append(("created", Text(N_("specimen {specimen}"), specimen=new["specimen_id"])))
        old = {**new, "images": [], "status": CaseStatus.OPEN.value, "impression": ""}
    elif (old["specimen_id"], old["patient_ref"]) != (new["specimen_id"], new["patient_ref"]):
        template = (N_("specimen {old} -> {new}; patient reference changed")
                    if old["patient_ref"] != new["patient_ref"] else N_("specimen {old} -> {new}"))
        events.append(("details changed", Text(template, old=old["specimen_id"], new=new["specimen_id"])))
    old_images, new_images = old["images"], new["images"]
    for i, im in enumerate(new_images):
        a = im["analysis"]
        prior = old_images[i] if i < len(old_images) else None
        if prior is None or prior["analysis"]["image_sha256"] != a["image_sha256"] \
                or prior["analysis"]["file_name"] != a["file_name"]:
            label = a["diagnosis"].get("label")
            status = a["diagnosis"]["status"]
            status = Text(WORDS[Status(status)]) if status in set(Status) else status  # a value of an older app: as is
            events.append(("image added", Text(N_("image {n}: {file} ({status}, suggested {label})"), n=i + 1,
                                               file=a["file_name"], status=status, label=label) if label
                           else Text(N_("image {n}: {file} ({status})"), n=i + 1, file=a["file_name"], status=status)))
            prior = None
        before = prior["review"] if prior else None
        after = im["review"]
        if _review_key(before) != _review_key(after):  # re-deciding the same thing only moves decided_at
            args = dict(n=i + 1, file=a["file_name"], before=_review_text(before), after=_review_text(after))
            events.append(("decision changed",
                           Text(N_("image {n} ({file}): {before} -> {after}; reason: {reason}"),
                                reason=after["reason"], **args) if after and after.get("reason")
                           else Text(N_("image {n} ({file}): {before} -> {after}"), **args)))
    for i in range(len(new_images), len(old_images)):
        events.append(("image removed", Text(N_("image {n}: {file}"), n=i + 1,
                                             file=old_images[i]["analysis"]["file_name"])))
    if (old.get("impression") or "") != (new.get("impression") or ""):
        events.append(("impression changed", new.get("impression") or ""))
    if old["status"] != CaseStatus.SIGNED.value and new["status"] == CaseStatus.SIGNED.value:
        events.append(("signed", Text(N_("by {who} at {at}"), who=new["signed_by"], at=new["signed_at"])))
    return events


def _parts_json(detail: str) -> str | None:
    return json.dumps(detail.to_parts(), ensure_ascii=False) if isinstance(detail, Text) else None


def _detail_from(detail: str, parts: str | None) -> str:
    """An audit detail as read back: the Text it was worded as, when its parts were stored."""
    if parts:
        try:
            return Text.from_parts(json.loads(parts))
        except (ValueError, KeyError, TypeError, IndexError):  # a hand-edited row: the English stands
            pass
    return detail


class CaseStore:
    """The history database at `path` (default: `default_history_dir()/cases.sqlite3`).

    Opening a store creates its folder and database if needed and migrates the schema; every
    method then uses its own short connection (closed on return), so one store can be shared
    between threads and processes."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path is not None else default_history_dir() / DB_NAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # patient references: user-only
            with self._connect() as conn:
                migrate(conn)
        except (OSError, sqlite3.DatabaseError) as exc:  # a read-only folder, or a file that is not SQLite
            raise HistoryError(Text(N_("Cannot open the case history at {path} ({error})."), path=str(self.path),
                                    error=str(exc))) from None

    @contextmanager
    def _connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """An autocommit connection, in one write transaction when `write`; always closed."""
        try:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise HistoryError(Text(N_("Cannot open the case history at {path} ({error})."), path=str(self.path),
                                    error=str(exc))) from None
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            if write:
                conn.execute("BEGIN IMMEDIATE")
            yield conn
            if write:
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def save(self, case: Case, who: str, keep_images: bool = False) -> list[tuple[str, str]]:
        """Insert or update `case` and append the audit rows for what changed, in one transaction;
        returns those (action, detail) rows. The uploads' bytes are stored only with `keep_images`
        (and a save without it drops ones stored before). A signed case is saved once: saving it
        again unchanged does nothing, changed raises `CaseFrozen`."""
        who = (who or "").strip()
        if not who:
            raise HistoryError(Text(N_("Enter your name to save the case.")))
        new = case.to_dict(keep_images=False)
        new.pop("addenda")  # they live in their own append-only table (add_addendum), not in the frozen JSON
        with self._connect(write=True) as conn:
            row = conn.execute("SELECT json FROM cases WHERE case_id = ?", (case.case_id,)).fetchone()
            old = json.loads(row[0]) if row else None
            if old is not None and old["status"] == CaseStatus.SIGNED.value:
                if old == new:
                    return []
                raise CaseFrozen(Text(N_("Case {specimen} was signed by {name} on {when} and cannot be changed; "
                                         "add an addendum, or open a new case."), specimen=old["specimen_id"],
                                      name=old["signed_by"], when=display_time(old["signed_at"])))
            events = changes(old, new)
            conn.execute(
                """INSERT INTO cases (case_id, specimen_id, patient_ref, status, created_at, signed_by, signed_at, json)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(case_id) DO UPDATE SET specimen_id = excluded.specimen_id,
                     patient_ref = excluded.patient_ref, status = excluded.status, signed_by = excluded.signed_by,
                     signed_at = excluded.signed_at, json = excluded.json""",
                (case.case_id, case.specimen_id, case.patient_ref, CaseStatus.OPEN.value, case.created_at,
                 None, None, json.dumps(new, ensure_ascii=False)),
            )
            for i, im in enumerate(case.images):
                blob = im.image_bytes if keep_images and im.image_bytes is not None else None
                conn.execute(
                    """INSERT INTO images (case_id, idx, file_name, image_sha256, image) VALUES (?, ?, ?, ?, ?)
                       ON CONFLICT(case_id, idx) DO UPDATE SET file_name = excluded.file_name,
                         image_sha256 = excluded.image_sha256, image = excluded.image""",
                    (case.case_id, i, im.analysis.file_name, im.analysis.image_sha256, blob),
                )
            conn.execute("DELETE FROM images WHERE case_id = ? AND idx >= ?", (case.case_id, len(case.images)))
            if case.status is CaseStatus.SIGNED:
                # Last, once the images are written: from here on the triggers refuse any change.
                conn.execute("UPDATE cases SET status = ?, signed_by = ?, signed_at = ? WHERE case_id = ?",
                             (CaseStatus.SIGNED.value, case.signed_by, case.signed_at, case.case_id))
            at = now_utc()
            conn.executemany(
                "INSERT INTO audit (case_id, at, who, action, detail, detail_parts) VALUES (?, ?, ?, ?, ?, ?)",
                [(case.case_id, at, who, action, detail, _parts_json(detail)) for action, detail in events])
        return events

    def load(self, case_id: str) -> Case:
        """The stored case, with the uploads' bytes where they were kept. Raises CaseNotFound."""
        with self._connect() as conn:
            row = conn.execute("SELECT json FROM cases WHERE case_id = ?", (case_id,)).fetchone()
            if row is None:
                raise CaseNotFound(Text(N_("There is no case {case_id} in the history."), case_id=case_id))
            blobs = dict(conn.execute("SELECT idx, image FROM images WHERE case_id = ? AND image IS NOT NULL",
                                      (case_id,)).fetchall())
            addenda = conn.execute("SELECT text, who, at FROM addenda WHERE case_id = ? ORDER BY id",
                                   (case_id,)).fetchall()
        case = Case.from_dict({**json.loads(row[0]), "addenda": [dict(zip(("text", "by", "at"), a)) for a in addenda]})
        for i, blob in blobs.items():
            if i < len(case.images):
                case.images[i].image_bytes = bytes(blob)
        return case

    def list_cases(self, search: str = "", signed_only: bool = False) -> list[dict[str, Any]]:
        """The cases whose specimen ID or patient reference contains `search` (any case), newest first."""
        pattern = "%" + search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._connect() as conn:
            rows = conn.execute(
                """SELECT c.case_id, c.specimen_id, c.patient_ref, c.status, c.created_at, c.signed_by, c.signed_at,
                          (SELECT COUNT(*) FROM images i WHERE i.case_id = c.case_id)
                   FROM cases c
                   WHERE (c.specimen_id LIKE ? ESCAPE '\\' OR c.patient_ref LIKE ? ESCAPE '\\')
                     AND (? = 0 OR c.status = 'signed')
                   ORDER BY c.created_at DESC, c.rowid DESC""",
                (pattern, pattern, int(signed_only)),
            ).fetchall()
        keys = ("case_id", "specimen_id", "patient_ref", "status", "created_at", "signed_by", "signed_at", "n_images")
        return [dict(zip(keys, r)) for r in rows]

    def add_addendum(self, case: Case, text: str, who: str) -> Addendum:
        """Add an addendum to the signed `case` (as stored here) and to the audit trail, in one
        transaction; `case` gets it too. Raises CaseError for an open case or empty text or name,
        CaseNotFound for a case not saved here."""
        if case.status is not CaseStatus.SIGNED or not (text or "").strip() or not (who or "").strip():
            case.add_addendum(text, who)  # raises the plain sentence for what is wrong
        addendum = Addendum(text.strip(), who.strip(), now_utc())
        with self._connect(write=True) as conn:
            row = conn.execute("SELECT status FROM cases WHERE case_id = ?", (case.case_id,)).fetchone()
            if row is None or row[0] != CaseStatus.SIGNED.value:
                raise CaseNotFound(Text(N_("Case {specimen} is not signed in this history; save the signed case "
                                           "first."), specimen=case.specimen_id))
            conn.execute("INSERT INTO addenda (case_id, at, who, text) VALUES (?, ?, ?, ?)",
                         (case.case_id, addendum.at, addendum.by, addendum.text))
            conn.execute("INSERT INTO audit (case_id, at, who, action, detail) VALUES (?, ?, ?, ?, ?)",
                         (case.case_id, addendum.at, addendum.by, "addendum", addendum.text))
        case.add_addendum(addendum.text, addendum.by, addendum.at)
        return addendum

    def audit_trail(self, case_id: str) -> list[dict[str, Any]]:
        """The case's audit rows, oldest first: id, at, who, action, detail (a `core.i18n.Text` where
        the app worded it, so that `translate` can say it in the user's language)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT id, at, who, action, detail, detail_parts FROM audit WHERE case_id = ? "
                                "ORDER BY id", (case_id,)).fetchall()
        return [{"id": i, "at": at, "who": who, "action": action,
                 "detail": _detail_from(detail, parts)} for i, at, who, action, detail, parts in rows]

    def export_json(self, case_id: str) -> str:
        """The case as JSON (with the uploads' bytes, base64, where they were kept)."""
        return self.load(case_id).to_json()

    def export_csv(self, case_id: str) -> str:
        """The case as CSV, one row per image (core.case.CSV_COLUMNS)."""
        return self.load(case_id).to_csv()

"""core.history: the SQLite case history, its migrations and its append-only audit trail."""
import csv
import io
import json
import sqlite3
from contextlib import closing

import pytest

from case_helpers import make_image
from conftest import ROOT
from core.case import Case, CaseFrozen, Decision
from core.history import (DB_NAME, MIGRATIONS, SCHEMA_VERSION, CaseNotFound, CaseStore, HistoryError,
                          default_history_dir)


def _case(specimen: str = "S-1", patient: str = "", n: int = 2, image_bytes: bytes | None = None) -> Case:
    case = Case(specimen, patient_ref=patient)
    for i in range(n):
        case.add(make_image(f"{specimen}-{i}.jpg", image_bytes=image_bytes))
    return case


def test_default_history_dir_is_per_user_and_created_only_when_a_store_opens(tmp_path, monkeypatch):
    folder = default_history_dir()
    assert ROOT != folder and ROOT not in folder.parents and folder.parts[-2:] == ("LeukoScope", "history")
    monkeypatch.setattr("core.history.default_history_dir", lambda: tmp_path / "user" / "history")
    assert not (tmp_path / "user").exists()
    store = CaseStore()
    assert store.path == tmp_path / "user" / "history" / DB_NAME and store.path.is_file()


def test_save_load_list_and_search(tmp_path):
    store = CaseStore(tmp_path / "a" / "b" / "h.sqlite3")  # parent folders made on open
    first, second, third = _case("S-100", "MRN 7"), _case("S-200", "ward_3"), _case("T-300")
    for case in (first, second, third):
        store.save(case, who="tech")
    loaded = store.load(first.case_id)
    assert loaded == first
    listed = store.list_cases()
    assert [c["specimen_id"] for c in listed] == ["T-300", "S-200", "S-100"]  # newest first
    assert listed[0]["n_images"] == 2 and listed[0]["status"] == "open" and set(listed[0]) >= {"case_id", "created_at"}
    assert [c["specimen_id"] for c in store.list_cases("s-")] == ["S-200", "S-100"]  # case-insensitive
    assert [c["specimen_id"] for c in store.list_cases("mrn")] == ["S-100"]  # patient reference too
    assert [c["specimen_id"] for c in store.list_cases("_")] == ["S-200"]  # LIKE wildcards are literal
    assert store.list_cases(signed_only=True) == []
    first.decide(0, Decision.CONFIRMED)
    first.decide(1, Decision.UNUSABLE)
    first.sign("Dr A")
    store.save(first, who="Dr A")
    signed = store.list_cases(signed_only=True)
    assert [c["case_id"] for c in signed] == [first.case_id] and signed[0]["signed_by"] == "Dr A"
    with pytest.raises(CaseNotFound, match="no case"):
        store.load("nope")
    with pytest.raises(HistoryError, match="name"):
        store.save(second, who=" ")


def test_audit_rows_describe_each_change_and_cannot_be_updated_or_deleted(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = CaseStore(path)
    case = _case(n=1)
    assert [a for a, _ in store.save(case, who="tech")] == ["created", "image added"]
    case.decide(0, Decision.CONFIRMED)
    store.save(case, who="Dr A")
    case.decide(0, Decision.RECLASSIFIED, "Pro", reason="coarse chromatin")
    case.add(make_image("late.jpg", status="rejected", label=None, confidence=None))
    case.decide(1, Decision.UNUSABLE)
    case.impression = "Probably Pro-B."
    store.save(case, who="Dr A")
    assert store.save(case, who="Dr A") == []  # nothing changed, nothing appended
    case.sign("Dr A")
    store.save(case, who="Dr A")
    trail = store.audit_trail(case.case_id)
    assert [(r["who"], r["action"]) for r in trail] == [
        ("tech", "created"), ("tech", "image added"), ("Dr A", "decision changed"), ("Dr A", "decision changed"),
        ("Dr A", "image added"), ("Dr A", "decision changed"), ("Dr A", "impression changed"), ("Dr A", "signed")]
    assert trail[2]["detail"] == "image 1 (S-1-0.jpg): undecided -> confirmed as Pre-B"
    assert trail[3]["detail"] == ("image 1 (S-1-0.jpg): confirmed as Pre-B -> reclassified as Pro-B; "
                                  "reason: coarse chromatin")
    assert trail[-1]["detail"].startswith("by Dr A at ")
    assert [r["id"] for r in trail] == sorted(r["id"] for r in trail)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit SET who = 'someone else' WHERE id = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit")
        with pytest.raises(sqlite3.DatabaseError, match="signed case"):
            conn.execute("UPDATE cases SET specimen_id = 'X'")
        with pytest.raises(sqlite3.DatabaseError, match="signed case"):
            conn.execute("DELETE FROM images")
    assert len(store.audit_trail(case.case_id)) == len(trail)


def test_the_audit_trail_reads_in_bangla_and_keeps_the_english_as_written(tmp_path):
    from core.i18n import translate

    path = tmp_path / "h.sqlite3"
    store = CaseStore(path)
    case = _case(n=1)
    store.save(case, who="tech")
    case.decide(0, Decision.RECLASSIFIED, "Pro", reason="coarse chromatin")
    store.save(case, who="Dr A")
    trail = store.audit_trail(case.case_id)
    assert [translate(r["detail"], "bn") for r in trail] == [
        "নমুনা S-1", "ছবি 1: S-1-0.jpg (নিশ্চিত, প্রস্তাবিত Pre-B)",
        "ছবি 1 (S-1-0.jpg): সিদ্ধান্ত হয়নি -> Pro-B হিসেবে পুনঃশ্রেণিবিন্যস্ত; কারণ: coarse chromatin"]
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        english = [r[0] for r in conn.execute("SELECT detail FROM audit ORDER BY id")]
        # a row written before schema 4 has no parts: it reads back, and shows, as written
        conn.execute("INSERT INTO audit (case_id, at, who, action, detail) VALUES (?, 'then', 'tech', "
                     "'created', 'specimen OLD')", (case.case_id,))
    assert english == ["specimen S-1", "image 1: S-1-0.jpg (ok, suggested Pre-B)",
                       "image 1 (S-1-0.jpg): undecided -> reclassified as Pro-B; reason: coarse chromatin"]
    assert trail == store.audit_trail(case.case_id)[:3]
    assert translate(store.audit_trail(case.case_id)[-1]["detail"], "bn") == "specimen OLD"


def test_a_signed_case_saved_again_with_changes_is_refused(tmp_path):
    store = CaseStore(tmp_path / "h.sqlite3")
    case = _case(n=1)
    case.decide(0, Decision.CONFIRMED)
    case.sign("Dr A")
    store.save(case, who="Dr A")
    assert store.save(store.load(case.case_id), who="Dr A") == []  # unchanged: fine, nothing appended
    tampered = case.to_dict()
    tampered["impression"] = "added after signing"
    with pytest.raises(CaseFrozen, match="signed by Dr A"):
        store.save(Case.from_dict(tampered), who="Dr B")
    assert store.load(case.case_id).impression == ""


def test_keep_images_false_stores_no_image_bytes(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = CaseStore(path)
    upload = b"\xff\xd8 the raw upload \xff\xd9"
    without, kept = _case("S-1", image_bytes=upload), _case("S-2", image_bytes=upload)
    store.save(without, who="tech")
    store.save(kept, who="tech", keep_images=True)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        blobs = dict(conn.execute("SELECT c.specimen_id, group_concat(i.image IS NULL) FROM images i "
                                  "JOIN cases c USING (case_id) GROUP BY c.specimen_id").fetchall())
        stored_json = conn.execute("SELECT group_concat(json) FROM cases").fetchone()[0]
    assert blobs == {"S-1": "1,1", "S-2": "0,0"}
    assert '"image":' not in stored_json  # the case JSON never carries uploads
    assert store.load(without.case_id).images[0].image_bytes is None
    assert store.load(kept.case_id).images[0].image_bytes == upload
    store.save(store.load(kept.case_id), who="tech")  # saving without keep_images drops them
    assert store.load(kept.case_id).images[0].image_bytes is None


def test_a_version_1_database_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.sqlite3"
    case = _case("OLD-1", n=1)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO cases VALUES (?, ?, ?, 'open', ?, NULL, NULL, ?)",
                     (case.case_id, case.specimen_id, "", case.created_at, json.dumps(case.to_dict(False))))
        conn.execute("INSERT INTO images VALUES (?, 0, 'OLD-1-0.jpg', ?, NULL)",
                     (case.case_id, case.images[0].analysis.image_sha256))
        conn.execute("INSERT INTO audit (case_id, at, who, action, detail) VALUES (?, 'then', 'tech', 'created', '')",
                     (case.case_id,))
    assert SCHEMA_VERSION >= 2
    store = CaseStore(path)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"cases_specimen", "audit_case"} <= indexes
    assert store.load(case.case_id) == case and store.list_cases("old")[0]["case_id"] == case.case_id
    assert [r["action"] for r in store.audit_trail(case.case_id)] == ["created"]
    CaseStore(path)  # opening an up-to-date history again changes nothing
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(HistoryError, match="newer LeukoScope"):
        CaseStore(path)


def test_a_file_that_is_not_a_history_is_refused_in_one_sentence(tmp_path):
    bogus = tmp_path / "cases.sqlite3"
    bogus.write_bytes(b"these are not the cases you are looking for" * 100)
    with pytest.raises(HistoryError, match="Cannot open the case history"):
        CaseStore(bogus)


def test_exports(tmp_path):
    store = CaseStore(tmp_path / "h.sqlite3")
    case = _case("S-5")
    case.decide(0, Decision.RECLASSIFIED, "Benign", reason="reactive lymphocyte")
    store.save(case, who="Dr A")
    assert Case.from_json(store.export_json(case.case_id)) == case
    rows = list(csv.DictReader(io.StringIO(store.export_csv(case.case_id))))
    assert [(r["file"], r["decision"], r["final_label"]) for r in rows] == [
        ("S-5-0.jpg", "reclassified", "Benign"), ("S-5-1.jpg", "", "")]


def test_addenda_to_a_signed_case_are_stored_audited_and_append_only(tmp_path):
    from core.case import CaseError

    store = CaseStore(tmp_path / "h.sqlite3")
    case = _case(n=1)
    store.save(case, who="Dr A")
    with pytest.raises(CaseError, match="signed case"):
        store.add_addendum(case, "too early", "Dr A")
    case.decide(0, Decision.CONFIRMED)
    case.sign("Dr A")
    with pytest.raises(CaseNotFound, match="not signed in this history"):
        store.add_addendum(case, "before the signed case is saved", "Dr A")
    store.save(case, who="Dr A")
    store.add_addendum(case, "flow cytometry: CD10+, CD19+", "Dr B")
    assert [a.text for a in case.addenda] == ["flow cytometry: CD10+, CD19+"]
    again = store.load(case.case_id)
    assert [(a.text, a.by) for a in again.addenda] == [("flow cytometry: CD10+, CD19+", "Dr B")]
    assert store.audit_trail(case.case_id)[-1] | {"id": 0, "at": ""} == {
        "id": 0, "at": "", "who": "Dr B", "action": "addendum", "detail": "flow cytometry: CD10+, CD19+"}
    assert store.save(again, who="Dr A") == []  # the signed case with its addenda saves as unchanged
    with closing(sqlite3.connect(tmp_path / "h.sqlite3")) as conn, pytest.raises(sqlite3.DatabaseError,
                                                                                 match="append-only"):
        conn.execute("UPDATE addenda SET text = 'rewritten'")

import json
import shutil

import pytest

from conftest import SAMPLES
from core.dataset import (DatasetError, build_manifest, duplicate_groups, kfold_parts, load_manifest, make_split,
                          manifest_hash, manifest_part, resolve_data_dir, scan_dataset)
from core.labels import CLASS_FOLDERS


def test_scan_samples_counts_and_hashes():
    index = scan_dataset(SAMPLES)
    assert index.counts() == {c: 5 for c in CLASS_FOLDERS}
    assert all(len(r.sha256) == 64 for r in index.records)
    assert index.skipped == []


def test_wrong_layout_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "Original")):
        scan_dataset(tmp_path)
    for c in CLASS_FOLDERS[:-1]:
        (tmp_path / "Original" / c).mkdir(parents=True)
    with pytest.raises(DatasetError, match="Class folder missing.*Pro"):
        scan_dataset(tmp_path)
    (tmp_path / "Original" / "Pro").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        scan_dataset(tmp_path)


def test_unreadable_and_non_image_files_are_listed(tmp_path):
    shutil.copytree(SAMPLES / "Original", tmp_path / "Original")
    (tmp_path / "Original" / "Pre" / "notes.txt").write_text("hi")
    (tmp_path / "Original" / "Pre" / "empty.jpg").write_bytes(b"")
    index = scan_dataset(tmp_path)
    reasons = dict(index.skipped)
    assert "Original/Pre/notes.txt" in reasons and "Original/Pre/empty.jpg" in reasons
    assert len(index.records) == 20


def test_resolve_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("LEUKOSCOPE_DATA", raising=False)
    with pytest.raises(DatasetError, match="--data"):
        resolve_data_dir(None)
    monkeypatch.setenv("LEUKOSCOPE_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    with pytest.raises(DatasetError, match="not found"):
        resolve_data_dir(tmp_path / "nope")


def test_duplicates_share_a_part(tmp_path):
    shutil.copytree(SAMPLES / "Original", tmp_path / "Original")
    pro = sorted((tmp_path / "Original" / "Pro").iterdir())
    for i in range(3):  # three copies of one image
        shutil.copy(pro[0], pro[0].with_name(f"copy{i}.jpg"))
    index = scan_dataset(tmp_path)
    groups = duplicate_groups(index.records)
    assert len(groups) == 1 and len(next(iter(groups.values()))) == 4
    for seed in range(5):
        part = make_split(index.records, 0.25, 0.25, seed)
        assert set(part.values()) == {"train", "val", "test"}
        assert len(part) == 20  # unique contents, not files


def test_split_is_stratified_seeded_and_grouped():
    index = scan_dataset(SAMPLES)
    a, b = make_split(index.records, 0.25, 0.25, 1), make_split(index.records, 0.25, 0.25, 1)
    assert a == b
    m = build_manifest(index, a)
    assert all(m["counts"]["test"][c] >= 1 for c in CLASS_FOLDERS)
    assert manifest_hash(m) == manifest_hash(json.loads(json.dumps(m)))
    folds = kfold_parts(index.records, k=5, seed=0)
    tested = [h for f in folds for h, p in f.items() if p == "test"]
    assert sorted(tested) == sorted({r.sha256 for r in index.records})


def test_manifest_roundtrip_and_missing_files(tmp_path, samples_manifest):
    m = load_manifest(samples_manifest)
    paths, labels = manifest_part(m, SAMPLES, "test")
    assert len(paths) == len(labels) and set(labels) <= set(range(4))
    with pytest.raises(DatasetError, match="not under"):
        manifest_part(m, tmp_path, "test")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DatasetError, match="not a LeukoScope split manifest"):
        load_manifest(bad)


def test_copy_parts_is_byte_identical_and_keeps_the_manifest_valid(tmp_path, samples_manifest, capsys):
    from core.dataset import main as dataset_main

    out = tmp_path / "copy"
    assert dataset_main(["copy", "--data", str(SAMPLES), "--manifest", str(samples_manifest),
                         "--out", str(out), "--parts", "train,val"]) == 0
    m = load_manifest(samples_manifest)
    for part in ("train", "val"):  # the same manifest, hashes checked, describes the copy
        paths, _ = manifest_part(m, out, part, check_hashes=True)
        assert paths
    with pytest.raises(DatasetError, match="not under"):  # the test part stays behind
        manifest_part(m, out, "test")
    assert dataset_main(["copy", "--data", str(SAMPLES), "--manifest", str(samples_manifest),
                         "--out", str(tmp_path / "x"), "--parts", "tset"]) == 2
    assert dataset_main(["copy", "--data", str(SAMPLES), "--manifest", str(samples_manifest),
                         "--out", str(SAMPLES), "--parts", "val"]) == 2
    assert "Unknown part" in capsys.readouterr().err


def test_a_resized_copy_gets_its_own_manifest_with_the_same_parts(tmp_path, samples_manifest):
    from core.dataset import main as dataset_main
    from core.imageio import read_image

    out = tmp_path / "small"
    assert dataset_main(["copy", "--data", str(SAMPLES), "--manifest", str(samples_manifest), "--out", str(out),
                         "--parts", "train,val,test", "--image-size", "132", "--jpeg-quality", "85"]) == 0
    original, derived = load_manifest(samples_manifest), load_manifest(out / "split_manifest.json")
    assert [(i["file"], i["class"], i["part"], i["sha256"]) for i in original["items"]] == \
        [(i["file"], i["class"], i["part"], i["source_sha256"]) for i in derived["items"]]
    assert derived["counts"] == original["counts"]
    assert derived["derived_from"]["manifest_hash"] == manifest_hash(original) != manifest_hash(derived)
    assert derived["derived_from"]["image_size"] == 132 and derived["derived_from"]["jpeg_quality"] == 85
    for part in ("train", "val", "test"):  # its own hashes describe the new files
        paths, _ = manifest_part(derived, out, part, check_hashes=True)
        assert all(read_image(p).shape == (132, 132, 3) for p in paths)
    assert dataset_main(["copy", "--data", str(SAMPLES), "--manifest", str(samples_manifest),
                         "--out", str(tmp_path / "bad"), "--image-size", "4"]) == 2


def test_committed_manifest_is_hash_grouped_and_70_30():
    m = load_manifest()
    by_hash = {}
    for it in m["items"]:
        by_hash.setdefault(it["sha256"], set()).add(it["part"])
    assert all(len(parts) == 1 for parts in by_hash.values())
    n = len(m["items"])
    n_test = sum(it["part"] == "test" for it in m["items"])
    assert abs(n_test / n - 0.3) < 0.01


def test_committed_manifest_matches_the_dataset(data_root):
    root = data_root
    m = load_manifest()
    index = scan_dataset(root)
    assert {r.file: r.sha256 for r in index.records} == {it["file"]: it["sha256"] for it in m["items"]}
    assert len(duplicate_groups(index.records)) > 0  # the README's Pro duplicates
    assert sum(index.counts().values()) == len(m["items"])


def test_split_never_overwrites_a_manifest_unless_asked(tmp_path, capsys):
    from conftest import SAMPLES
    from core.dataset import main as dataset_main

    out = tmp_path / "m.json"
    small = ["--test-size", "0.25", "--val-size", "0.25"]  # 20 samples: enough images per class in each part
    assert dataset_main(["split", "--data", str(SAMPLES), "--out", str(out), *small]) == 0
    before = out.read_bytes()
    assert dataset_main(["split", "--data", str(SAMPLES), "--out", str(out), "--seed", "3", *small]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    assert dataset_main(["split", "--data", str(SAMPLES), "--out", str(out), "--seed", "3", *small,
                         "--overwrite"]) == 0

"""Issue 24 (review's records, lock and symlinks) and issue 23 item 10 (a review you can act
on), on small real photos: each test fails on f7ac9cf.

Most of them act through ``mtl review DATA --apply DECISIONS`` (what the review page
saves), which moves photos without scoring, so no model is needed; the page itself is
driven in a real headless Chromium.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mtl.cli import app
from mtl.locks import folder_lock
from mtl.review import actions
from mtl.review.flags import Finding
from tests.conftest import HYMENOPTERA

ANTS, BEES = HYMENOPTERA / "ants", HYMENOPTERA / "bees"


def snapshot(root: Path) -> dict[str, str]:
    """Every file and link under ``root`` (path -> SHA-256, or the link's target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file() and p.name != ".mtl.lock":
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_data(tmp_path: Path, n: int = 3, manifest: bool = True) -> Path:
    """DATA with ants/ and bees/ (n real photos each) and a fetch-style manifest."""
    root = tmp_path / "data"
    lines = []
    for cls, src in (("ants", ANTS), ("bees", BEES)):
        (root / cls).mkdir(parents=True)
        for i, p in enumerate(sorted(src.glob("*.jpg"))[:n]):
            name = f"{i:06d}.jpg"
            shutil.copy(p, root / cls / name)
            sha = hashlib.sha256(p.read_bytes()).hexdigest()
            lines.append({"class": cls, "file": f"{cls}/{name}", "url": f"http://x/{cls}{i}",
                          "engine": "test", "sha256": sha, "phash": "0" * 16, "width": 100,
                          "height": 100, "fetched": "2024-01-01T00:00:00Z"})  # fmt: skip
    if manifest:
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        (root / "manifest.jsonl").write_text(text, encoding="utf-8")
    return root


def decide(
    tmp_path: Path, rows: list[dict[str, object]], name: str = "d.json", root: Path | None = None
) -> Path:
    """The decisions file the page would save for ``root`` (default ``tmp_path/data``): bound
    to the folder's state and each named photo's SHA-256, as the page binds it."""
    root = root or tmp_path / "data"
    bound = []
    for row in rows:
        f = row.get("file")
        photo = root / f if isinstance(f, str) and ".." not in f else None
        if "sha256" not in row and photo is not None and photo.is_file():
            row = {**row, "sha256": hashlib.sha256(photo.read_bytes()).hexdigest()}
        bound.append(row)
    try:
        state = actions.folder_state(root)
    except Exception:  # noqa: BLE001 - a layout scan refuses: the test is about something else
        state = ""
    path = tmp_path / name
    doc = {"format": "mtl-review-decisions", "data": str(root), "state": state}
    path.write_text(json.dumps({**doc, "decisions": bound}))
    return path


def review(cli, *args: object):
    return cli.invoke(app, ["review", *map(str, args)])


def not_review(snap: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in snap.items() if not k.startswith("_review")}


# --- class 1: the journal, the lock, the records read back ---------------------------------


def test_review_folder_that_is_a_symlink_is_refused_and_nothing_outside_is_touched(cli, tmp_path):
    """H1: DATA/_review -> elsewhere: --undo deleted report.html, review.jsonl and empty
    folders there; a plain review overwrote report.html there."""
    root = make_data(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "empty").mkdir(parents=True)
    (elsewhere / "report.html").write_text("mine")
    (elsewhere / "review.jsonl").write_text("")
    (root / "_review").symlink_to(elsewhere)
    d = decide(tmp_path, [])
    before = snapshot(tmp_path)
    for args in (["--undo"], [], ["--apply", d]):
        result = review(cli, root, *args)
        assert result.exit_code == 2, (args, result.stdout)
        assert "_review is a symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before and (elsewhere / "empty").is_dir()


def test_apply_waits_for_no_one_a_held_folder_lock_refuses_it(cli, tmp_path):
    """M1/M7: review --apply takes the lock fetch and train take; a second writer is refused
    before anything moves."""
    root = make_data(tmp_path)
    before = snapshot(root)
    d = decide(tmp_path, [{"file": "ants/000000.jpg", "action": "remove"}])
    with folder_lock(root, "mtl fetch"):
        result = review(cli, root, "--apply", d)
        assert result.exit_code == 2 and "another mtl fetch" in result.stderr, result.stderr
        result = review(cli, root, "--undo")  # nothing recorded yet: refused either way
        assert result.exit_code == 2
    assert snapshot(root) == before


def test_rerun_after_an_interrupted_apply_records_each_photo_once_and_undo_restores(cli, tmp_path):
    """M2: an apply killed after writing its records but before moving: the next apply
    recorded the unmoved photos twice and --undo refused everything."""
    root = make_data(tmp_path)
    before = snapshot(root)
    rows = [{"file": f"ants/00000{i}.jpg", "action": "remove"} for i in range(3)]
    moves = actions.read_decisions(root, decide(tmp_path, rows), ["ants", "bees"]).moves
    (root / "_review").mkdir()
    actions._write_records(root, moves)  # the journal of an apply killed before its moves
    result = review(cli, root, "--apply", decide(tmp_path, rows), "--json")
    assert result.exit_code == 0, result.stderr
    records = (root / "_review" / "review.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["original"] for r in records) == [r["file"] for r in rows]
    result = review(cli, root, "--undo", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["restored"]) == 3
    assert snapshot(root) == before


def test_relabel_then_set_aside_is_undone_by_one_undo(cli, tmp_path):
    """M3: a photo relabelled by one apply and set aside by a later one: --undo refused."""
    root = make_data(tmp_path)
    before = snapshot(root)
    first = decide(tmp_path, [{"file": "ants/000000.jpg", "action": "move", "class": "bees"}])
    assert review(cli, root, "--apply", first).exit_code == 0
    assert not (root / "ants" / "000000.jpg").exists()
    # bees/000000.jpg was already a bee: the relabelled ant got a free name.
    moved = json.loads((root / "_review" / "review.jsonl").read_text())["file"]
    assert moved == "bees/000000-1.jpg" and (root / moved).is_file()
    lines = [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines()]
    line = next(x for x in lines if x["file"] == moved)
    assert line["class"] == "bees" and line["relabeled_from"] == "ants/000000.jpg"
    second = decide(tmp_path, [{"file": moved, "action": "remove"}], "d2.json")
    assert review(cli, root, "--apply", second).exit_code == 0
    result = review(cli, root, "--undo", "--json")
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["restored"]) == 2
    assert snapshot(root) == before


def test_photo_deleted_from_review_is_reported_and_the_others_come_back(cli, tmp_path):
    """M4: a photo deleted from _review/ (as users do with junk) blocked --undo for all."""
    root = make_data(tmp_path)
    before = snapshot(root)
    rows = [{"file": f"ants/00000{i}.jpg", "action": "remove"} for i in range(3)]
    assert review(cli, root, "--apply", decide(tmp_path, rows)).exit_code == 0
    (root / "_review" / "removed" / "ants" / "000001.jpg").unlink()
    result = review(cli, root, "--undo", "--json")
    assert result.exit_code == 0, result.stderr
    undone = json.loads(result.stdout)
    assert len(undone["restored"]) == 2 and [m["original"] for m in undone["missing"]] == [
        "ants/000001.jpg"
    ]
    assert "ants/000001.jpg not restored" in result.stderr
    after = snapshot(root)
    assert {k for k in before if before[k] != after.get(k)} == {"ants/000001.jpg", "manifest.jsonl"}
    # Its manifest line stays marked, so fetch does not bring the junk back.
    marked = [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines()]
    assert [m["file"] for m in marked if m.get("status") == "review"] == ["ants/000001.jpg"]
    assert not (root / "_review").exists()


def test_photo_deleted_while_it_was_scored_is_skipped_not_a_crash(tmp_path):
    """M4: a photo deleted between scoring and moving left apply half done."""
    root = make_data(tmp_path)
    rows = [{"file": f"ants/00000{i}.jpg", "action": "remove"} for i in range(3)]
    moves = actions.read_decisions(root, decide(tmp_path, rows), ["ants", "bees"]).moves
    (root / "ants" / "000001.jpg").unlink()
    done = actions.apply_all(root, moves)
    assert done.gone == ["ants/000001.jpg"] and len(done.moves) == 2
    assert len(actions.read_records(root)) == 2


def test_symlinked_photo_is_refused_naming_it_and_nothing_moves(cli, tmp_path):
    """M5: bees/x.jpg -> ../ants/y.jpg: --apply moved the link's target (a real ant)."""
    root = make_data(tmp_path)
    (root / "bees" / "link.jpg").symlink_to("../ants/000000.jpg")
    d = decide(tmp_path, [{"file": "bees/link.jpg", "action": "remove"},
                          {"file": "bees/000001.jpg", "action": "remove"}])  # fmt: skip
    before = snapshot(tmp_path)
    result = review(cli, root, "--apply", d)
    # Issue 34 H: the link is refused by name, the other decision applied.
    assert result.exit_code == 0, result.stdout
    assert "symbolic link" in result.stderr and "bees/link.jpg" in result.stderr
    assert "not applied" in result.stderr
    after = snapshot(tmp_path)
    assert after["data/bees/link.jpg"] == before["data/bees/link.jpg"]
    assert after["data/ants/000000.jpg"] == before["data/ants/000000.jpg"]
    assert "data/bees/000001.jpg" not in after
    assert "data/_review/removed/bees/000001.jpg" in after
    # The same through plan() (what --apply after scoring uses).
    finding = Finding(0, root / "bees" / "link.jpg", "bees", None, "off_topic", 0.9, "", 0.5)
    with pytest.raises(Exception, match="is a symbolic link"):
        actions.plan(root, [finding], relabel=False, relabel_confidence=0.9)


def test_symlinked_class_folder_is_refused_with_exit_2(cli, tmp_path):
    """L1: a symlinked class folder gave exit 1 "unexpected ValueError"."""
    root = make_data(tmp_path, manifest=False)
    outside = tmp_path / "outside_bees"
    shutil.move(root / "bees", outside)
    (root / "bees").symlink_to(outside)
    d = decide(tmp_path, [{"file": "bees/000001.jpg", "action": "remove"}])
    before = snapshot(tmp_path)
    result = review(cli, root, "--apply", d)
    assert result.exit_code == 2 and "symbolic link" in result.stderr, result.stderr
    assert "data/bees" in result.stderr
    assert snapshot(tmp_path) == before


def test_relabel_of_a_photo_in_a_sub_folder_goes_to_the_top_of_the_target_class(tmp_path):
    """M6: ants/sub/x.jpg was moved to ants/bees/x.jpg, still class ants."""
    root = make_data(tmp_path, manifest=False)
    (root / "ants" / "sub").mkdir()
    shutil.move(root / "ants" / "000002.jpg", root / "ants" / "sub" / "x.jpg")
    before = snapshot(root)
    f = Finding(0, root / "ants" / "sub" / "x.jpg", "ants", "bees", "wrong_label", 0.9, "", 0.05,
                0.95)  # fmt: skip
    moves = actions.plan(root, [f], relabel=True, relabel_confidence=0.9)
    assert [(m.action, m.file) for m in moves] == [("relabel", "bees/x.jpg")]
    actions.apply(root, moves)
    assert (root / "bees" / "x.jpg").is_file() and not (root / "ants" / "bees").exists()
    actions.undo(root)
    assert snapshot(root) == before


def test_fetch_keeps_review_marks_written_meanwhile_and_says_set_aside(tmp_path, monkeypatch):
    """M7: fetch's final manifest write dropped review's marks; L13: fetch reported a
    picture review set aside as "ambiguous"."""
    from mtl.crawler import FetchRequest, fetch
    from mtl.crawler.state import OutputState
    from tests.fakes.engine_server import FakeEngine

    root = make_data(tmp_path, manifest=False)
    with FakeEngine() as engine:
        monkeypatch.setenv("MTL_ENGINE_URL", engine.base)
        photos = sorted(ANTS.glob("*.jpg"))[10:13]
        engine.set_results("ant", [engine.add(f"/a{i}.jpg", p.read_bytes())
                                   for i, p in enumerate(photos)])  # fmt: skip
        shutil.rmtree(root / "ants")
        fetch(FetchRequest(keywords=["ant"], out=root, limit=3, min_size="50x50"))
        kept = sorted((root / "ant").iterdir())
        state = OutputState.load(root)  # a fetch that has read the manifest...
        d = decide(tmp_path, [{"file": f"ant/{kept[0].name}", "action": "remove"}])
        classes = ["ant", "bees"]
        actions.apply(root, actions.read_decisions(root, d, classes).moves)  # ...review marks...
        state.save()  # ...and the fetch writes its manifest at the end
        marked = [json.loads(x) for x in (root / "manifest.jsonl").read_text().splitlines()]
        assert [m["file"] for m in marked if m.get("status") == "review"] == [f"ant/{kept[0].name}"]
        again = fetch(FetchRequest(keywords=["ant"], out=root, limit=3, min_size="50x50"))
    rejected = again.classes[0].rejected
    assert rejected["set_aside"] == 1 and rejected["ambiguous"] == 0, rejected


@pytest.mark.parametrize(
    ("record", "message"),
    [
        # the manifest moved into a class as a photo
        ({"file": "_review/removed/ants/m.jpg", "original": "manifest.jsonl"}, "not a photo"),
        # an untouched bee "relabelled" back to ants: not where relabel puts it
        (
            {
                "action": "relabel",
                "file": "bees/000000.jpg",
                "original": "ants/000000.jpg",
                "given": "bees",
                "suggested": "ants",
            },
            "not where review relabel puts",
        ),  # fmt: skip
        ({"manifest_line": '{"file": "bees/000001.jpg"}\n'}, "manifest_line is not"),
        ({"sha256": "x"}, "sha256"),
        ({"reason": "../../x"}, "reason"),
        ({"file": ".hidden/a.jpg"}, "hidden"),
    ],
)
def test_edited_records_are_refused_before_anything_moves(cli, tmp_path, record, message):
    """L5: an edited review.jsonl could move any file inside DATA and inject a manifest
    line unchecked."""
    root = make_data(tmp_path)
    d = decide(tmp_path, [{"file": "ants/000001.jpg", "action": "remove"}])
    assert review(cli, root, "--apply", d).exit_code == 0
    path = root / "_review" / "review.jsonl"
    good = json.loads(path.read_text())
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, **record}) + "\n")
    before = snapshot(tmp_path)
    result = review(cli, root, "--undo")
    assert result.exit_code == 2, result.stdout
    assert "review.jsonl line 2" in result.stderr and message in result.stderr, result.stderr
    assert snapshot(tmp_path) == before


def test_undo_leaves_a_record_whose_photo_changed_and_reports_it(cli, tmp_path):
    """L5: a record's photo replaced by another file is never moved (SHA-256 checked)."""
    root = make_data(tmp_path)
    d = decide(tmp_path, [{"file": "ants/000001.jpg", "action": "remove"},
                          {"file": "ants/000002.jpg", "action": "remove"}])  # fmt: skip
    assert review(cli, root, "--apply", d).exit_code == 0
    swapped = root / "_review" / "removed" / "ants" / "000001.jpg"
    shutil.copy(BEES / sorted(os.listdir(BEES))[5], swapped)
    result = review(cli, root, "--undo", "--json")
    assert result.exit_code == 0, result.stderr
    undone = json.loads(result.stdout)
    assert [m["original"] for m in undone["restored"]] == ["ants/000002.jpg"]
    assert [m["original"] for m in undone["blocked"]] == ["ants/000001.jpg"]
    assert swapped.is_file() and not (root / "ants" / "000001.jpg").exists()
    assert len(actions.read_records(root)) == 1  # still recorded for a later --undo


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--label-threshold", "nan"),
        ("--label-threshold", "-1"),
        ("--off-topic-threshold", "-1"),
        ("--off-topic-threshold", "inf"),
        ("--relabel-confidence", "1.5"),
        ("--duplicate-threshold", "1.2"),
        ("--duplicate-threshold", "0.3"),  # below its floor: refused, not silently ignored
    ],
)
def test_thresholds_are_validated_before_any_work(cli, tmp_path, option, value):
    """L3/M14: NaN and negatives were accepted (-1 set aside every photo); a duplicate
    threshold below 0.97 was silently ignored."""
    root = make_data(tmp_path)
    before = snapshot(tmp_path)
    result = review(cli, root, option, value, "--apply")
    assert result.exit_code == 2, result.stdout
    assert option in result.stderr and "must be a number" in result.stderr
    assert snapshot(tmp_path) == before


def test_duplicate_threshold_below_the_old_floor_is_honoured():
    """M14: cross-class duplicates were only ever found at 0.97 and above."""
    import numpy as np

    from mtl.review.scores import score

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 64))
    x[6] = x[0] + 0.35 * rng.normal(size=64)  # a near copy of photo 0, in the other class
    labels = np.array([0] * 6 + [1] * 6)
    sim = float(x[0] @ x[6] / np.linalg.norm(x[0]) / np.linalg.norm(x[6]))
    assert 0.9 < sim < 0.97
    assert score(x, labels, None, folds=2, duplicate=0.9).duplicate_of[6] == 0
    assert score(x, labels, None, folds=2).duplicate_of[6] == -1


def test_report_file_is_not_overwritten_and_checked_before_scoring(cli, tmp_path):
    """L2: --report overwrote an existing file; an unwritable one failed after all scoring."""
    root = make_data(tmp_path)
    mine = tmp_path / "notes.html"
    mine.write_text("my notes")
    result = review(cli, root, "--report", mine)
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert mine.read_text() == "my notes"
    (tmp_path / "file").write_text("")
    result = review(cli, root, "--report", tmp_path / "file" / "r.html")
    assert result.exit_code == 2 and "cannot write report" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "computing features" not in result.stderr


def test_manifest_line_with_a_line_separator_is_marked(cli, tmp_path):
    """L4: a manifest line holding a raw U+2028 was not marked (splitlines split it)."""
    root = make_data(tmp_path)
    path = root / "manifest.jsonl"
    lines = path.read_text(encoding="utf-8").split("\n")
    entry = json.loads(lines[0])
    entry["url"] = "http://x/a\u2028b"
    lines[0] = json.dumps(entry, ensure_ascii=False)
    path.write_text("\n".join(lines), encoding="utf-8")
    before = snapshot(root)
    d = decide(tmp_path, [{"file": entry["file"], "action": "remove"}])
    assert review(cli, root, "--apply", d).exit_code == 0
    first = json.loads(path.read_text(encoding="utf-8").split("\n")[0])
    assert first["status"] == "review" and first["url"] == "http://x/a\u2028b"
    assert review(cli, root, "--undo").exit_code == 0
    assert snapshot(root) == before


def test_apply_is_checked_up_front_and_a_failure_names_the_path(cli, tmp_path, monkeypatch):
    """L6: a folder review cannot write gave a half-applied state; a full disk was
    reported as "No space left on device (OSError)" naming no file."""
    root = make_data(tmp_path)
    (root / "_review" / "removed").mkdir(parents=True)
    (root / "_review" / "removed" / "bees").write_text("not a folder")
    d = decide(tmp_path, [{"file": "ants/000000.jpg", "action": "remove"},
                          {"file": "bees/000000.jpg", "action": "remove"}])  # fmt: skip
    before = snapshot(tmp_path)
    result = review(cli, root, "--apply", d)
    assert result.exit_code == 2 and "_review/removed/bees" in result.stderr, result.stderr
    assert "nothing was moved" in result.stderr and snapshot(tmp_path) == before
    (root / "_review" / "removed" / "bees").unlink()
    real = os.replace

    def full(src, dest):  # the disk fills up at the second photo
        if str(dest).endswith("bees/000000.jpg"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dest))
        real(src, dest)

    monkeypatch.setattr(actions.os, "replace", full)
    result = review(cli, root, "--apply", d)
    monkeypatch.undo()
    assert result.exit_code == 2, result.stdout
    assert re.search(r"cannot use \S+bees/000000.jpg: No space left on device", result.stderr)
    assert [m.original for m in actions.read_records(root)] == ["ants/000000.jpg"]
    assert review(cli, root, "--undo").exit_code == 0
    assert not_review(snapshot(root)) == not_review({k[5:]: v for k, v in before.items()
                                                     if k.startswith("data/")})  # fmt: skip


# --- issue 23 item 10: a review you can act on ----------------------------------------------


def test_decisions_apply_then_undo_round_trips(cli, tmp_path):
    root = make_data(tmp_path)
    before = snapshot(root)
    d = decide(tmp_path, [
        {"file": "ants/000000.jpg", "action": "keep"},
        {"file": "ants/000001.jpg", "action": "remove", "reason": "off_topic"},
        {"file": "bees/000002.jpg", "action": "move", "class": "ants"},
    ])  # fmt: skip
    result = review(cli, root, "--apply", d, "--json")
    assert result.exit_code == 0, result.stderr
    applied = {m["original"]: m["file"] for m in json.loads(result.stdout)["applied"]}
    assert applied == {"ants/000001.jpg": "_review/off_topic/ants/000001.jpg",
                       "bees/000002.jpg": "ants/000002-1.jpg"}  # fmt: skip
    assert (root / "ants" / "000000.jpg").is_file()
    result = review(cli, root, "--undo")
    assert result.exit_code == 0 and "2 photo(s) put back" in result.stdout
    assert snapshot(root) == before


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"file": "../x.jpg", "action": "remove"}], "not a relative path"),
        ([{"file": "ants/000000.jpg", "action": "delete"}], "not one of keep, remove, move"),
        ([{"file": "ants/000000.jpg", "action": "move", "class": "wasps"}], "not another class"),
        ([{"file": "ants/nope.jpg", "action": "remove"}], "is not there"),
        ([{"file": "ants/000000.jpg", "action": "remove"}] * 2, "two decisions"),
    ],
)
def test_bad_decisions_are_refused_before_anything_moves(cli, tmp_path, rows, message):
    root = make_data(tmp_path)
    before = snapshot(root)
    result = review(cli, root, "--apply", decide(tmp_path, rows))
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert snapshot(root) == before
    assert review(cli, root, decide(tmp_path, rows)).exit_code == 2  # DECISIONS needs --apply


def test_planted_records_past_the_limit_are_refused_before_they_are_read(
    cli, tmp_path, monkeypatch
):
    """A decisions file or journal can be any size: past RECORDS_LIMIT it is refused,
    naming it, not read into memory; nothing moves."""
    from mtl.review import actions

    root = make_data(tmp_path)
    before = snapshot(root)
    monkeypatch.setattr(actions, "RECORDS_LIMIT", 4096)
    rows = [{"file": f"ants/{i:06d}.jpg", "action": "keep"} for i in range(200)]
    result = review(cli, root, "--apply", decide(tmp_path, rows))
    assert result.exit_code == 2 and "too large for a decisions file" in result.stderr
    assert snapshot(root) == before
    (root / "_review").mkdir()
    (root / "_review" / "review.jsonl").write_text("{}\n" * 4096)
    result = review(cli, root, "--undo")
    assert result.exit_code == 2 and "too large for review's journal" in result.stderr


def test_a_journal_that_is_not_a_regular_file_is_named_not_read(cli, tmp_path):
    """A FIFO (or a folder) at _review/review.jsonl: exit 2 naming it, never a read that
    blocks, nor "nothing to undo"."""
    root = make_data(tmp_path)
    (root / "_review").mkdir()
    os.mkfifo(root / "_review" / "review.jsonl")
    result = review(cli, root, "--undo")
    assert result.exit_code == 2 and "is not a regular file" in result.stderr, result.stderr


def test_piped_table_does_not_cut_file_names(capsys, tmp_path):
    from mtl.cli.review import _table
    from mtl.review import ReviewResult, Thresholds

    root = tmp_path / "data"
    long = root / "longsleeve" / ("a_rather_long_file_name_of_a_photo_" * 2 + "0001.jpg")
    f = Finding(0, long, "longsleeve", "t_shirt", "wrong_label", 0.9, "looks like t_shirt",
                0.05, 0.95)  # fmt: skip
    result = ReviewResult(root, ["longsleeve", "t_shirt"], 10, [f], 1, [], None, [], [], "",
                          Thresholds())  # fmt: skip
    _table(result)
    assert str(long.relative_to(root)) in capsys.readouterr().out  # on one line, whole


def test_python_api_review_applies_decisions_and_returns_json(tmp_path):
    import mtl

    root = make_data(tmp_path)
    d = decide(tmp_path, [{"file": "bees/000001.jpg", "action": "remove"}])
    result = mtl.review(root, decisions=d)
    data = result.to_json()
    assert [m["original"] for m in data["applied"]] == ["bees/000001.jpg"]
    assert json.dumps(data) and "1 moved" in repr(result)
    assert len(mtl.review.undo(root).restored) == 1


# --- the page, in a real headless browser ---------------------------------------------------

DRIVE = """<script>
window.addEventListener('load', () => {
  const cards = [...document.querySelectorAll('.card')];
  cards[0].querySelector('input[value=remove]').click();
  const sel = cards[1].querySelector('select');
  sel.value = sel.options[0].value;
  sel.dispatchEvent(new Event('change'));
  const link = document.getElementById('download');
  link.addEventListener('click', ev => ev.preventDefault());
  link.click();
  const p = document.createElement('pre');
  p.id = 'mtl-out';
  p.textContent = JSON.stringify({href: link.href.slice(0, 5), name: link.download,
    text: document.getElementById('decisions').value, classes: cards.map(c => c.className)});
  document.body.appendChild(p);
});
</script></body>"""


def page_data(page: str) -> dict:
    """The page's data block (the flagged photos' rows)."""
    block = re.search(r"<script type='application/json' id='mtl-data'>(.*?)</script>", page, re.S)
    assert block
    return json.loads(block.group(1))


def drive(browser: str, page: Path, script: str, tmp_path: Path) -> dict:
    """Open ``page`` with ``script`` run at load in headless Chromium; what it wrote."""
    driven = page.with_name("driven.html")
    driven.write_text(page.read_text().replace("</body>", script, 1))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    dom = subprocess.run(
        [browser, *flags, "--virtual-time-budget=5000", "--dump-dom", driven.as_uri()],
        capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)}, check=False,
    )  # fmt: skip
    driven.unlink()
    found = re.search(r"<pre id=\"mtl-out\">(.*?)</pre>", dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    import html

    return json.loads(html.unescape(found.group(1)))


def test_page_controls_make_a_decisions_file_that_applies_and_undoes(cli, tmp_path):
    from PIL import Image

    from mtl.data.images import load_image
    from mtl.review import report
    from tests.test_review import chromium

    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    root = make_data(tmp_path)
    wide = root / "ants" / "000002.jpg"
    Image.open(ANTS / sorted(os.listdir(ANTS))[7]).resize((400, 200)).save(wide)
    before = snapshot(root)
    findings = [
        Finding(0, root / "ants" / "000001.jpg", "ants", None, "off_topic", 0.9, "fits no", 0.5,
                priority=0.9),
        Finding(1, wide, "ants", "bees", "wrong_label", 0.8, "looks like bees", 0.1, 0.9,
                priority=0.8),
        Finding(2, root / "bees" / "000000.jpg", "bees", None, "dark", 0.6, "dark", 0.9,
                priority=0.6),
    ]  # fmt: skip
    target = root / "_review" / "report.html"
    state = actions.folder_state(root)
    report.build(target, root, ["ants", "bees"], findings, {}, 6, "test", state=state)
    page = target.read_text()
    assert "base64" not in page  # thumbnails are files beside the page
    # The thumbnail is the centre square the model saw, not the whole 2:1 photo.
    from urllib.parse import unquote

    rows = page_data(page)["rows"]
    thumb_file = target.parent / unquote(rows[1][7])
    assert thumb_file.parent == report.thumbs_folder(target)
    thumb = np.asarray(Image.open(thumb_file).convert("RGB"))
    assert thumb.shape == (200, 200, 3)
    seen = load_image(wide, 200, fit="center").astype(float)
    assert np.abs(thumb - seen).mean() < 6
    assert np.abs(thumb - load_image(wide, 200, fit="squash").astype(float)).mean() > 10
    shown = drive(browser, target, DRIVE, tmp_path)
    assert shown["href"] == "blob:" and shown["name"] == "decisions.json"
    assert shown["classes"] == ["card remove", "card move", "card keep"]
    decisions = json.loads(shown["text"])
    assert decisions["state"] == state and decisions["data"] == str(root)
    # Only what was marked; each bound to its photo's content.
    assert [(r["file"], r["action"], r.get("class")) for r in decisions["decisions"]] == [
        ("ants/000001.jpg", "remove", None),
        ("ants/000002.jpg", "move", "bees"),
    ]
    assert decisions["decisions"][0]["sha256"] == before["ants/000001.jpg"]
    saved = tmp_path / "decisions.json"
    saved.write_text(shown["text"])
    result = review(cli, root, "--apply", saved, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["warnings"] == []  # the state is the page's
    assert (root / "_review" / "off_topic" / "ants" / "000001.jpg").is_file()
    assert (root / "bees" / "000002.jpg").is_file()
    assert review(cli, root, "--undo").exit_code == 0
    assert not_review(snapshot(root)) == before
    # Issue 35: --undo keeps the page (and its thumbnails), saying it was undone.
    assert "Undone" in target.read_text() and thumb_file.is_file()


PAGINATE = """<script>
window.addEventListener('load', () => {
  const $ = id => document.getElementById(id);
  const files = () => [...document.querySelectorAll('.card')].map(c => c.dataset.file);
  const out = {first: files(), imgs: document.images.length,
               lazy: [...document.images].every(i => i.loading === 'lazy'),
               info: $('page-info').textContent, prevOff: $('prev').disabled};
  document.querySelector('.card input[value=remove]').click();
  $('next').click(); $('next').click();
  out.last = files(); out.nextOff = $('next').disabled;
  document.querySelector('.card input[value=remove]').click();
  $('prev').click(); $('prev').click();
  out.back = document.querySelector('.card').className;
  const sort = $('sort'); sort.value = 'file'; sort.dispatchEvent(new Event('change'));
  out.byFile = files();
  const only = $('class-filter'); only.value = '1'; only.dispatchEvent(new Event('change'));
  out.bees = $('page-info').textContent;
  out.text = $('decisions').value;
  const p = document.createElement('pre');
  p.id = 'mtl-out';
  p.textContent = JSON.stringify(out);
  document.body.appendChild(p);
});
</script></body>"""


def many_findings(root: Path, n: int) -> list[Finding]:
    """``n`` flagged copies of the data's photos (ants and bees alternating), priority
    falling with the index."""
    out = []
    for i in range(n):
        cls = ("ants", "bees")[i % 2]
        path = root / cls / f"copy{i:04d}.jpg"
        shutil.copy(root / cls / f"{i % 3:06d}.jpg", path)
        out.append(Finding(i, path, cls, None, "dark", 0.6, "dark", 0.9, priority=1 - i / 1000))
    return out


def test_page_shows_a_page_of_cards_at_a_time_and_keeps_decisions_across_pages(tmp_path):
    """Issue 35: 130 flagged photos are 3 pages of 60; only the shown cards (and their
    images, lazily) are in the page; marks survive paging, sorting and filtering."""
    from mtl.review import report
    from tests.test_review import chromium

    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    root = make_data(tmp_path)
    findings = many_findings(root, 130)
    target = root / "_review" / "report.html"
    report.build(target, root, ["ants", "bees"], findings, {"dark": 130}, 136, "test")
    # Six photos' bytes behind 130 copies: six thumbnails, shared by content.
    assert len(list(report.thumbs_folder(target).iterdir())) == 6
    out = drive(browser, target, PAGINATE, tmp_path)
    names = [f.path.relative_to(root).as_posix() for f in findings]
    assert out["first"] == names[:60] and out["imgs"] == 60 and out["lazy"]
    assert out["info"] == "page 1 of 3 (130 photos)" and out["prevOff"]
    assert out["last"] == names[120:] and out["nextOff"]
    assert out["back"] == "card remove"  # marked on page 1, still marked
    assert out["byFile"] == sorted(names)[:60]
    assert out["bees"] == "page 1 of 2 (65 photos)"
    marked = [r["file"] for r in json.loads(out["text"])["decisions"]]
    assert marked == [names[0], names[120]]


def test_page_size_grows_with_flagged_photos_only(tmp_path):
    """Issue 35: no image inside the page and nothing per unflagged photo; a few hundred
    bytes per flagged one (10,000 photos, 1,000 flagged: well under 1 MB)."""
    from mtl.review import report

    root = make_data(tmp_path)
    findings = many_findings(root, 40)
    small = report.render(root, ["ants", "bees"], findings, {"dark": 40}, 46, "test")
    large = report.render(root, ["ants", "bees"], findings, {"dark": 40}, 100_000, "test")
    assert abs(len(large) - len(small)) < 10
    fewer = report.render(root, ["ants", "bees"], findings[:20], {"dark": 20}, 46, "test")
    per_flagged = (len(small) - len(fewer)) / 20
    # Each row with a 64-character SHA-256 and thumbnail name: about 250 bytes.
    assert per_flagged < 400 and len(fewer) + 1000 * per_flagged < 1_000_000


HOSTILE = """<script>
window.addEventListener('load', () => {
  const card = document.querySelector('.card');
  const sel = card.querySelector('select');
  sel.value = [...sel.options].find(o => o.textContent.startsWith('big')).value;
  sel.dispatchEvent(new Event('change'));
  const p = document.createElement('pre');
  p.id = 'mtl-out';
  p.textContent = JSON.stringify({title: document.title, pwned: window.pwned || 0,
    text: document.getElementById('decisions').value,
    option: sel.options[0].textContent, shown: card.querySelector('.file').textContent});
  document.body.appendChild(p);
});
</script></body>"""


def test_hostile_names_and_double_spaces_reach_the_decisions_as_they_are(cli, tmp_path):
    """Issue 34 H: a class named with two spaces could not be chosen (an <option> without a
    value collapses them); names that are HTML are shown as text, never run."""
    from mtl.review import report
    from tests.test_review import chromium

    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    root = make_data(tmp_path, manifest=False)
    spaced = "big  bees"
    (root / "bees").rename(root / spaced)
    evil = '<img src=x onerror="window.pwned=1">'
    (root / evil).mkdir()
    shutil.copy(root / "ants" / "000000.jpg", root / evil / "a.jpg")
    shutil.copy(root / "ants" / "000001.jpg", root / evil / "b.jpg")
    name = "x'><img src=y onerror=window.pwned=2>.jpg"
    photo = root / "ants" / name
    shutil.copy(root / "ants" / "000002.jpg", photo)
    classes = sorted(["ants", spaced, evil])
    findings = [
        Finding(0, photo, "ants", spaced, "wrong_label", 0.9, "</script><b>x</b>", 0.1, 0.9,
                priority=0.9),
        Finding(1, root / evil / "a.jpg", evil, None, "dark", 0.6, "dark", 0.9, priority=0.5),
    ]  # fmt: skip
    target = root / "_review" / "report.html"
    report.build(
        target, root, classes, findings, {}, 8, "<script>", state=actions.folder_state(root)
    )
    out = drive(browser, target, HOSTILE, tmp_path)
    assert out["pwned"] == 0 and "pwned" not in out["title"]
    assert out["shown"] == f"ants/{name}"
    decided = json.loads(out["text"])["decisions"]
    assert [(r["file"], r["action"], r["class"]) for r in decided] == [
        (f"ants/{name}", "move", spaced)  # both spaces kept
    ]
    saved = tmp_path / "d.json"
    saved.write_text(out["text"])
    result = review(cli, root, "--apply", saved, "--json")
    assert result.exit_code == 0, result.stderr
    assert (root / spaced / name).is_file()


def test_decisions_are_checked_one_by_one_and_bound_to_the_photos(cli, tmp_path):
    """Issue 34 H: one odd name or deleted photo no longer blocks the file; a photo changed
    since the page was made is not touched; a file for another folder is refused."""
    root = make_data(tmp_path)
    rows = [
        {"file": "ants/000000.jpg", "action": "remove"},
        {"file": "ants/000001.jpg", "action": "remove"},
        {"file": "ants/000002.jpg", "action": "remove"},
        {"file": "../etc/x.jpg", "action": "remove"},
        {"file": "bees/000000.jpg", "action": "move", "class": "ants"},
    ]
    d = decide(tmp_path, rows)
    (root / "ants" / "000001.jpg").unlink()  # deleted since the page was made
    shutil.copy(root / "bees" / "000001.jpg", root / "ants" / "000002.jpg")  # changed since
    before = snapshot(root)
    result = review(cli, root, "--apply", d, "--json")
    assert result.exit_code == 0, result.stderr
    applied = {m["original"] for m in json.loads(result.stdout)["applied"]}
    assert applied == {"ants/000000.jpg", "bees/000000.jpg"}
    warnings = "\n".join(json.loads(result.stdout)["warnings"])
    assert "changed since the page was made" in warnings  # the folder's state
    assert "decision 2" in warnings and "is not there" in warnings
    assert "decision 3" in warnings and "ants/000002.jpg changed" in warnings
    assert "decision 4" in warnings and "not a relative path" in warnings
    assert snapshot(root)["ants/000002.jpg"] == before["ants/000002.jpg"]  # untouched
    assert review(cli, root, "--undo").exit_code == 0
    # A file made for another folder: refused whole, nothing moved.
    other = make_data(tmp_path / "other")
    d2 = decide(tmp_path, [{"file": "ants/000000.jpg", "action": "remove"}], "o.json", other)
    before = snapshot(root)
    result = review(cli, root, "--apply", d2)
    assert result.exit_code == 2 and "was made for" in result.stderr, result.stderr
    assert snapshot(root) == before
    # A file without the binding (an older page): refused, saying so.
    old = tmp_path / "old.json"
    row = {"file": "ants/000000.jpg", "action": "remove"}
    old.write_text(json.dumps({"format": "mtl-review-decisions", "decisions": [row]}))
    result = review(cli, root, "--apply", old)
    assert result.exit_code == 2 and "not bound to a folder" in result.stderr
    assert snapshot(root) == before

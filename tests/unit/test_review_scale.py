"""Issue 35 item 2 and issue 34 H without a model: the duplicate search past the all-pairs
size, the one priority, decisions checked one by one and bound to the folder, the
manifest restored in one pass, and the page's size and escaping.

Photos here are small files with image names: applying decisions decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mtl.errors import DataError
from mtl.review import actions, flags, report, scores
from mtl.review.flags import Finding, Thresholds


def clustered(n: int, d: int = 64, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative features around ``k`` class centres, and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, size=(k, d))
    labels = rng.integers(0, k, size=n)
    return np.abs(centres[labels] + rng.gamma(1.0, 1.0, size=(n, d)) * 1.5), labels


def plant(x: np.ndarray, labels: np.ndarray, pairs: int, noise: float, seed: int = 1):
    """The last ``pairs`` photos become near-copies of earlier ones, in another class."""
    rng = np.random.default_rng(seed)
    n, k = len(x), int(labels.max()) + 1
    src = rng.choice(n - pairs, pairs, replace=False)
    dst = np.arange(n - pairs, n)
    x[dst] = x[src] * (1 + rng.normal(0, noise, size=(pairs, x.shape[1])))
    labels[dst] = (labels[src] + 1) % k
    return src, dst


def test_bucketed_search_finds_what_all_pairs_finds():
    x, labels = clustered(3000)
    src, dst = plant(x, labels, 40, noise=0.05)
    exact = scores.cross_class_duplicates(x, labels, 0.97)
    fast = scores.cross_class_duplicates(x, labels, 0.97, exact_up_to=100)
    # Every pair all-pairs finds past the threshold, the buckets find (same similarity).
    hit = exact[0] >= 0
    assert hit[dst].all() and hit[src].all()  # both sides of each planted pair
    assert (fast[0] >= 0)[hit].mean() >= 0.99
    both = hit & (fast[0] >= 0)
    assert np.allclose(fast[1][both], exact[1][both], atol=1e-5)
    # Deterministic given the seed.
    again = scores.cross_class_duplicates(x, labels, 0.97, exact_up_to=100)
    assert (again[0] == fast[0]).all()


def test_same_bytes_are_found_exactly_whatever_the_features():
    x, labels = clustered(500)
    keys = [f"k{i}" for i in range(500)]
    j = int(np.flatnonzero(labels != labels[0])[0])
    keys[j] = keys[0]  # identical files, features far apart (another class's centre)
    for up_to in (10_000, 10):  # all pairs, and the buckets
        best, sim = scores.cross_class_duplicates(
            x, labels, 0.97, same_bytes=keys, exact_up_to=up_to
        )
        assert best[0] == j and best[j] == 0 and sim[0] == sim[j] == 1.0


def test_off_topic_photo_ranks_above_a_photo_between_two_classes():
    """Issue 35: an off-topic photo ranked below soft-boundary wrong labels."""
    t = Thresholds()
    boundary = flags.priority(p_given=0.30, off_topic_z=0.0, t=t)  # k=2, just flagged
    off_topic = flags.priority(p_given=0.5, off_topic_z=t.off_topic + 1.0, t=t)
    confident_wrong = flags.priority(p_given=0.01, off_topic_z=0.0, t=t)
    assert boundary < off_topic < confident_wrong
    assert flags.priority(0.5, t.off_topic, t) == pytest.approx(0.75)  # 1 - 0.5 * 0.5
    assert 0.0 <= flags.priority(1.0, -1e9, t) < 0.01
    assert flags.priority(0.0, 1e9, t, quality=1.0) == 1.0


def test_find_orders_by_priority():
    from mtl.review.quality import Stats

    t = Thresholds()
    probs = np.array([[0.3, 0.7], [0.5, 0.5], [0.9, 0.1]])
    off = np.array([0.0, t.off_topic + 2.0, 0.0])
    s = scores.Scores(
        probs, probs[:, 0].copy(), 1.0, off, "imagenet-concepts", np.full(3, -1), np.zeros(3)
    )
    plain = Stats(0.5, 0.01, 1.5, 300, 200)
    paths = [Path(f"a/{i}.jpg") for i in range(3)]
    found = flags.find(paths, np.zeros(3, np.int64), ["a", "b"], s, [plain] * 3, t)
    assert [(f.index, f.reason) for f in found] == [(1, "off_topic"), (0, "wrong_label")]
    assert found[0].priority > found[1].priority
    assert found[0].to_json(Path("."))["priority"] == round(found[0].priority, 4)


# --- decisions -----------------------------------------------------------------------------


def make_data(tmp_path: Path, n: int = 4) -> Path:
    root = tmp_path / "data"
    lines = []
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            rel = f"{cls}/{i:03d}.jpg"
            data = f"{cls}{i}".encode()
            (root / rel).write_bytes(data)
            lines.append({"class": cls, "file": rel, "sha256": hashlib.sha256(data).hexdigest()})
    (root / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decisions(root: Path, rows: list[dict], **doc: object) -> Path:
    bound = []
    for r in rows:
        photo = root / r["file"] if isinstance(r, dict) else None
        bound.append({**r, "sha256": sha(photo)} if photo and photo.is_file() else r)
    head = {"format": report.DECISIONS_FORMAT, "data": str(root)}
    head["state"] = actions.folder_state(root)
    path = root.parent / "d.json"
    path.write_text(json.dumps({**head, **doc, "decisions": bound}))
    return path


def test_one_bad_decision_is_reported_the_others_applied(tmp_path):
    root = make_data(tmp_path)
    rows = [
        {"file": "ants/000.jpg", "action": "remove"},
        {"file": "ants/.hidden.jpg", "action": "remove"},
        {"file": "ants/001.jpg", "action": "move", "class": "wasps"},
        {"file": "ants/002.jpg", "action": "explode"},
        {"file": "bees/000.jpg", "action": "move", "class": "ants"},
        {"file": "bees/001.jpg", "action": "keep"},
        "not an object",
    ]
    d = decisions(root, rows)
    got = actions.read_decisions(root, d, ["ants", "bees"])
    assert [(m.original, m.action) for m in got.moves] == [
        ("ants/000.jpg", "set_aside"),
        ("bees/000.jpg", "relabel"),
    ]
    assert [p.split(": ")[0].rsplit(" ", 2)[-2:] for p in got.problems] == [
        ["decision", "2"],
        ["decision", "3"],
        ["decision", "4"],
        ["decision", "7"],
    ]
    assert not got.changed
    # The moves carry the SHA-256 the decisions were checked against.
    assert got.moves[0].sha256 == sha(root / "ants/000.jpg")


def test_stale_decisions_are_reported_and_the_state_change_said(tmp_path):
    root = make_data(tmp_path)
    d = decisions(root, [{"file": "ants/000.jpg", "action": "remove"},
                         {"file": "ants/001.jpg", "action": "remove"}])  # fmt: skip
    (root / "ants/001.jpg").write_bytes(b"edited since")
    got = actions.read_decisions(root, d, ["ants", "bees"])
    assert [m.original for m in got.moves] == ["ants/000.jpg"]
    assert got.changed and "ants/001.jpg changed since the page was made" in got.problems[0]
    (root / "ants/000.jpg").write_bytes(b"edited too")
    with pytest.raises(DataError, match="nothing was moved"):  # nothing left to apply
        actions.read_decisions(root, d, ["ants", "bees"])


def test_a_decisions_file_for_another_folder_is_refused(tmp_path):
    root = make_data(tmp_path)
    d = decisions(root, [{"file": "ants/000.jpg", "action": "remove"}], data="/elsewhere")
    with pytest.raises(DataError, match="was made for /elsewhere"):
        actions.read_decisions(root, d, ["ants", "bees"])


def test_folder_state_follows_names_and_sizes(tmp_path):
    root = make_data(tmp_path)
    state = actions.folder_state(root)
    assert actions.folder_state(root) == state
    (root / "ants/000.jpg").write_bytes(b"a longer photo than before")
    assert actions.folder_state(root) != state


def test_apply_and_undo_restore_every_manifest_line_in_one_pass(tmp_path):
    """Linear: one dictionary of manifest lines, not a scan a photo (45 s at 32k)."""
    root = make_data(tmp_path, n=50)
    manifest = (root / "manifest.jsonl").read_text()
    rows = [{"file": f"ants/{i:03d}.jpg", "action": "remove"} for i in range(50)]
    rows += [{"file": f"bees/{i:03d}.jpg", "action": "move", "class": "ants"} for i in range(50)]
    got = actions.read_decisions(root, decisions(root, rows), ["ants", "bees"])
    done = actions.apply_all(root, got.moves)
    assert len(done.moves) == 100
    marked = (root / "manifest.jsonl").read_text()
    assert marked.count('"status": "review"') == 50 and marked.count("relabeled_from") == 50
    undone = actions.undo(root)
    assert len(undone.restored) == 100
    assert (root / "manifest.jsonl").read_text() == manifest


def test_undo_keeps_the_page_marked_undone(tmp_path):
    root = make_data(tmp_path)
    page = actions.review_dir(root) / actions.REPORT
    f = Finding(0, root / "ants/000.jpg", "ants", None, "dark", 0.6, "dark", 0.9, priority=0.6)
    report.build(page, root, ["ants", "bees"], [f], {"dark": 1}, 8, "test")
    d = decisions(root, [{"file": "ants/000.jpg", "action": "remove"}])
    actions.apply_all(root, actions.read_decisions(root, d, ["ants", "bees"]).moves)
    actions.undo(root)
    text = page.read_text()
    assert "Undone" in text and "put 1 photo(s) back" in text
    assert not actions.records_path(root).exists()


# --- the page ------------------------------------------------------------------------------


def test_page_data_cannot_close_its_script_element(tmp_path):
    root = tmp_path / "data"
    evil = root / "ants" / "</script><script>alert(1)</script>.jpg"
    f = Finding(0, evil, "ants", "b<b>", "wrong_label", 0.9, "</script>", 0.1, 0.9, priority=0.9)
    page = report.render(root, ["ants", "b<b>"], [f], {}, 2, "<script>alert(2)</script>")
    assert page.count("<script") == 2  # the data block and the page's own script
    assert "</script><script>alert" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(2)" in page


def test_thumbnails_folder_that_is_a_link_is_refused(tmp_path):
    page = tmp_path / "r" / "report.html"
    page.parent.mkdir()
    (tmp_path / "elsewhere").mkdir()
    report.thumbs_folder(page).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="is a symbolic link"):
        report.check_thumbs_folder(page)


def test_thumbnails_are_files_named_by_content_reused_and_pruned(tmp_path):
    from PIL import Image

    root = tmp_path / "data"
    (root / "ants").mkdir(parents=True)
    findings = []
    for i, colour in enumerate(("red", "blue")):
        path = root / "ants" / f"{i}.jpg"
        Image.new("RGB", (300, 200), colour).save(path)
        findings.append(Finding(i, path, "ants", None, "dark", 0.6, "", 0.9, priority=0.6))
    page = root / "_review" / "report.html"
    report.build(page, root, ["ants", "bees"], findings, {}, 2, "test")
    thumbs = sorted(report.thumbs_folder(page).iterdir())
    assert len(thumbs) == 2 and all(report.THUMB_NAME.fullmatch(t.name) for t in thumbs)
    assert Image.open(thumbs[0]).size == (report.THUMB, report.THUMB)
    made = {t.name: t.stat().st_mtime_ns for t in thumbs}
    (report.thumbs_folder(page) / "mine.txt").write_text("not review's")
    report.build(page, root, ["ants", "bees"], findings[:1], {}, 2, "test")
    left = {t.name: t.stat().st_mtime_ns for t in report.thumbs_folder(page).iterdir()}
    assert len(left) == 2 and "mine.txt" in left  # the unused one gone, nothing else
    kept = next(n for n in left if n != "mine.txt")
    assert left[kept] == made[kept]  # reused, not made again

"""Every command survives the bad-input corpus: a result per good file, a reason per bad one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtl.cli import app
from tests.conftest import ALPHA
from tests.corpus import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def check_per_image_results(result, corpus) -> None:
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr
    by_name = {Path(r["file"]).name: r for r in json.loads(result.stdout)}
    assert set(by_name) == set(corpus)
    for name, entry in corpus.items():
        if entry.good:
            assert by_name[name].get("predictions"), (name, by_name[name])
        else:
            assert entry.reason in by_name[name]["error"], (name, by_name[name])
            # one line on stderr names the file and the reason
            lines = [ln for ln in result.stderr.splitlines() if name in ln]
            assert len(lines) == 1 and entry.reason in lines[0], (name, lines)


def test_classify_survives_the_corpus(cli, corpus):
    folder = corpus["empty.jpg"].path.parent
    result = cli.invoke(app, ["classify", "--alpha", str(ALPHA), "--json", "-k", "1", str(folder)])
    check_per_image_results(result, corpus)


def test_fetch_keeps_none_of_the_bad_files(cli, corpus, tmp_path):
    """The corpus served over loopback HTTP: only one copy of the (one) good photo lands."""
    from tests.fakes.engine_server import FakeEngine

    files = sorted((n, e) for n, e in corpus.items() if e.path.is_file())
    with FakeEngine() as engine:
        urls = [engine.add(f"/c/{i}.jpg", e.path.read_bytes()) for i, (_, e) in enumerate(files)]
        (tmp_path / "urls.txt").write_text("".join(f"corpus\t{u}\n" for u in urls))
        out = tmp_path / "data"
        args = ["fetch", "--urls", str(tmp_path / "urls.txt"), "--out", str(out), "--json"]
        result = cli.invoke(
            app, [*args, "--min-size", "100x100", "--timeout", "5", "--limit", "50"]
        )
    assert result.exit_code == 3, result.stderr  # fell short of --limit
    summary = json.loads(result.stdout)["classes"][0]
    # empty, text, bad CRC | truncated, corrupt body | 1x1 | bomb | the 7 other good copies
    assert summary["rejected"] == {
        "not_image": 3,
        "truncated": 2,
        "too_small": 1,
        "too_large": 1,
        "http_error": 0,
        "timeout": 0,
        "duplicate": 7,
        "ambiguous": 0,
        "set_aside": 0,
    }
    kept = sorted(p.name for p in (out / "corpus").iterdir())
    assert kept == ["000001.gif"]  # animated.gif, first good file in URL order
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["file"] for m in manifest] == ["corpus/000001.gif"]


def test_predict_survives_the_corpus(cli, corpus, trained_model):
    folder = corpus["empty.jpg"].path.parent
    result = cli.invoke(app, ["predict", str(trained_model.path), "--json", str(folder)])
    check_per_image_results(result, corpus)


def test_evaluate_counts_bad_files_apart(cli, corpus, trained_model, tmp_path):
    """The corpus as a third of a test set: its bad files are neither right nor wrong."""
    import shutil

    data = tmp_path / "test"
    for label in ("ants", "bees"):
        (data / label).mkdir(parents=True)
    good = sorted(trained_model.val_dir.glob("ants/*"))[:5]
    for p in good:
        shutil.copy(p, data / "ants" / p.name)
    for name, entry in corpus.items():
        if entry.path.is_file():
            shutil.copy(entry.path, data / "ants" / name)
    result = cli.invoke(app, ["evaluate", str(trained_model.path), str(data), "--json"])
    assert result.exit_code == 0, result.stderr  # a score was computed; bad files are listed
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    bad = {n for n, e in corpus.items() if not e.good and e.path.is_file()}
    good_corpus = {n for n, e in corpus.items() if e.good}
    assert {Path(b["file"]).name for b in report["bad_files"]} == bad
    assert report["images"] == len(good) + len(good_corpus)
    assert sum(map(sum, report["confusion_matrix"]["matrix"])) == report["images"]


def test_a_manifest_cannot_point_fetch_outside_out(cli, tmp_path):
    """A hostile manifest entry (../victim.jpg) is refused before anything is touched."""
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"precious")
    out = tmp_path / "data"
    (out / "crow").mkdir(parents=True)
    entry = {"class": "crow", "file": "../victim.jpg", "sha256": "0" * 64, "phash": "0" * 16}
    entry |= {"width": 500, "height": 400, "url": "http://127.0.0.1:9/x.jpg", "engine": "bing"}
    (out / "manifest.jsonl").write_text(json.dumps(entry) + "\n")
    urls = tmp_path / "urls.txt"
    urls.write_text("crow\thttp://127.0.0.1:9/y.jpg\n")
    result = cli.invoke(app, ["fetch", "--urls", str(urls), "--out", str(out), "--timeout", "1"])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "manifest" in result.stderr and "Traceback" not in result.stderr
    assert victim.read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["crow", "manifest.jsonl"]


def test_a_manifest_cannot_make_train_read_outside_the_data_folder(tmp_path):
    from mtl.data import dataset
    from mtl.errors import DataError

    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
    line = json.dumps({"class": "a", "file": "../../etc/passwd"})
    (tmp_path / "data" / "manifest.jsonl").write_text(line + "\n")
    with pytest.raises(DataError, match="outside"):
        dataset.scan(tmp_path / "data")


def test_train_skips_bad_files_and_uses_the_convertible_ones(cli, corpus, tmp_path):
    import shutil

    from tests.conftest import HYMENOPTERA

    data = tmp_path / "data"
    for label in ("ants", "bees"):
        (data / label).mkdir(parents=True)
        for p in sorted((HYMENOPTERA / label).glob("*.jpg"))[:12]:
            shutil.copy(p, data / label / p.name)
    for name, entry in corpus.items():
        if entry.path.is_file():
            shutil.copy(entry.path, data / "ants" / name)
    run = tmp_path / "run"
    args = ["train", str(data), "--alpha", str(ALPHA), "--epochs", "2", "--out", str(run)]
    result = cli.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    bad = {n: e for n, e in corpus.items() if not e.good and e.path.is_file()}
    skipped = {Path(s["file"]).name: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == set(bad)
    for name, entry in bad.items():
        assert entry.reason in skipped[name], (name, skipped[name])
    good = sum(e.good for e in corpus.values())
    assert sum(summary["train_count"].values()) + sum(summary["val_count"].values()) == 24 + good
    metrics = json.loads((run / "metrics.json").read_text())
    assert {Path(s["file"]).name for s in metrics["skipped"]} == set(bad)
    assert (run / "model.keras").is_file()

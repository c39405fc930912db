"""The blog's story in one test: fetch two classes from a loopback engine, then train on them."""

from __future__ import annotations

import json

from mtl.cli import app
from mtl.data import dataset
from tests.conftest import HYMENOPTERA


def test_train_reads_what_fetch_wrote(cli, tmp_path, monkeypatch):
    from tests.fakes.engine_server import FakeEngine

    out = tmp_path / "data"
    with FakeEngine() as engine:
        monkeypatch.setenv("MTL_ENGINE_URL", engine.base)
        for keyword, folder in (("blue tit", "ants"), ("crow", "bees")):
            photos = sorted((HYMENOPTERA / folder).glob("*.jpg"))[:12]
            urls = [engine.add(f"/{folder}/{p.name}", p.read_bytes()) for p in photos]
            engine.set_results(keyword, urls)
        args = ["fetch", "blue tit", "crow", "--out", str(out), "--limit", "12"]
        result = cli.invoke(app, [*args, "--min-size", "100x100", "--quiet", "--json"])
    assert result.exit_code in (0, 3), result.stderr
    kept = {c["class"]: c["kept"] for c in json.loads(result.stdout)["classes"]}
    assert kept["blue_tit"] >= 10 and kept["crow"] >= 10
    # A file dropped in by hand, not checked by fetch, is left out with a warning.
    (out / "crow" / "by_hand.jpg").write_bytes((out / "crow").iterdir().__next__().read_bytes())
    ds = dataset.scan(out)
    assert ds.classes == ["blue_tit", "crow"]
    assert len(ds.items) == kept["blue_tit"] + kept["crow"]
    assert any("not listed" in w for w in ds.warnings)
    run = tmp_path / "run"
    args = ["train", str(out), "--alpha", "0.75", "--epochs", "2", "--out", str(run), "--json"]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["classes"] == ["blue_tit", "crow"]
    assert sum(summary["train_count"].values()) + sum(summary["val_count"].values()) == len(
        ds.items
    )
    assert (run / "model.keras").is_file()

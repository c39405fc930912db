"""Every command survives the bad-input corpus: results for the good files, a reason for each bad one."""

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

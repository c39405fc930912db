"""Presets shipped inside the package, addressable by name (issue 23 item 8)."""

from __future__ import annotations

import pytest

from mtl.cli import app
from mtl.errors import UsageError
from mtl.pipeline import config


def test_presets_are_package_data():
    shipped = config.presets()
    assert {"blog", "default"} <= set(shipped)
    assert all(
        p.parent.name == "configs" and p.parent.parent.name == "mtl" for p in shipped.values()
    )


def test_preset_by_name_is_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing named blog here: the shipped preset
    by_name = config.resolve("blog")
    assert by_name == config.resolve(config.presets()["blog"])
    assert by_name.fit == "squash" and by_name.head == [1024, 1024, 512]


def test_a_file_of_that_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blog").write_text("epochs = 3\n")
    assert config.resolve("blog").epochs == 3


def test_unknown_preset_names_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        UsageError, match=r"no preset named 'blgo' \(presets: blog, default\).*'blog'"
    ):
        config.resolve("blgo")


def test_cli_unknown_preset_exit_2_one_line(cli, tmp_path):
    result = cli.invoke(app, ["train", str(tmp_path), "--config", "blgo"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "presets: blog" in result.output


def test_help_lists_each_command_on_one_line(cli):
    """Issue 23 item 11: review's summary had a line break in the middle of `mtl --help`."""
    result = cli.invoke(app, ["--help"], env={"COLUMNS": "220", "TERMINAL_WIDTH": "220"})
    rows = [line for line in result.stdout.splitlines() if line.startswith("│ review")]
    assert len(rows) == 1 and "move them only when asked." in rows[0], result.stdout

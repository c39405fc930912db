"""The CLI starts fast (--help and fetch never import TensorFlow); every command has examples."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mtl.cli import app

COMMANDS = ["classify", "fetch", "train", "predict", "evaluate", "export", "serve"]


@pytest.mark.parametrize("argv", [["--help"], ["fetch", "--help"], ["classify", "--help"]])
def test_help_does_not_import_tensorflow(argv):
    code = (
        "import sys\n"
        "from mtl.cli import app\n"
        f"try:\n    app({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'jax', 'torch') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(cli, command):
    result = cli.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Examples" in result.stdout
    assert f"mtl {command}" in result.stdout


def test_version(cli):
    result = cli.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("mtl ")


def test_unknown_option_is_a_usage_error(cli):
    result = cli.invoke(app, ["classify", "--no-such-option", "x.jpg"])
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr

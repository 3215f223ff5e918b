"""The CLI run in-process, as the ``conslaw`` entry point does, for the CLI tests."""

import sys
from types import SimpleNamespace

import pytest

from conslaw.cli import run

_STATE = {}


@pytest.fixture(autouse=True)
def _capture(capsys, monkeypatch):
    _STATE["capsys"], _STATE["monkeypatch"] = capsys, monkeypatch


def conslaw(*args):
    """Run the CLI in-process; returncode, stdout, stderr."""
    _STATE["monkeypatch"].setattr(sys, "argv", ["conslaw", *args])
    _STATE["capsys"].readouterr()
    code = 0
    try:
        run()
    except SystemExit as exc:
        code = exc.code or 0
    out = _STATE["capsys"].readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

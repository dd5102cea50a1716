"""Running ``matdx`` in this process, as a user types it (``main()`` with ``sys.argv``)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def run_matdx(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
              *args: str) -> Done:
    """``matdx ARGS...`` through :func:`matdx.cli.main.main`; returns its exit code and output
    (stderr with line breaks of the terminal folded into spaces)."""
    from matdx.cli.main import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["matdx", *args])
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    else:
        code = 0
    out, err = capsys.readouterr()
    return Done(code, out, err)

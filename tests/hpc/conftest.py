"""Shared fixtures of the hpc tests: recorded scheduler output and a replaying runner."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from matdx.hpc.errors import CommandFailedError
from matdx.hpc.scheduler import CommandResult

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_text(name: str) -> str:
    """Contents of ``tests/hpc/fixtures/NAME``."""
    return (FIXTURES / name).read_text()


@dataclass
class Reply:
    """What the fake scheduler prints for one command."""

    stdout: str = ""
    stderr: str = ""
    returncode: int = 0


@dataclass
class FakeRunner:
    """Stands in for ``_call``: records every command and replays canned replies.

    ``replies`` maps an argv prefix (tuple) to a Reply; the longest matching
    prefix wins. A command with no reply fails the test.
    """

    replies: dict[tuple[str, ...], Reply] = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)

    def __call__(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        check: bool = True,
    ) -> CommandResult:
        argv = list(argv)
        self.calls.append({"argv": argv, "input": input, "cwd": cwd, "timeout": timeout})
        matches = [k for k in self.replies if tuple(argv[: len(k)]) == k]
        if not matches:
            pytest.fail(f"unexpected command {argv}")
        reply = self.replies[max(matches, key=len)]
        if check and reply.returncode != 0:
            raise CommandFailedError(argv, reply.returncode, reply.stdout, reply.stderr)
        return CommandResult(tuple(argv), reply.returncode, reply.stdout, reply.stderr)

    @property
    def argvs(self) -> list[list[str]]:
        """The command lines run so far."""
        return [c["argv"] for c in self.calls]


@pytest.fixture
def fake_runner() -> FakeRunner:
    """An empty FakeRunner; tests add replies."""
    return FakeRunner()

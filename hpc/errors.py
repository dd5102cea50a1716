"""Errors raised by :mod:`matdx.hpc`.

Every error derives from :class:`HPCError`. Bad input (resources, site profiles)
raises subclasses of :class:`ValueError` as well, so callers that validate user
input can catch either. Errors from running a scheduler command carry the
command line, exit code, stdout and stderr.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence


class HPCError(Exception):
    """Base class of every error raised by :mod:`matdx.hpc`."""


class ResourceError(HPCError, ValueError):
    """A resource request is invalid; the message names the field and the reason."""


class UnsupportedResourceError(ResourceError):
    """A scheduler cannot express a requested resource (e.g. a QOS on LSF)."""


class SiteProfileError(HPCError, ValueError):
    """A site profile is missing, unreadable or invalid; the message names the field."""


def _tail(text: str, limit: int = 2000) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


class CommandError(HPCError):
    """A scheduler command could not be run or did not succeed.

    Parameters
    ----------
    argv : sequence of str
        The command line that was run.
    message : str
        What went wrong.
    """

    def __init__(self, argv: Sequence[str], message: str) -> None:
        self.argv = list(argv)
        super().__init__(f"{message}: {shlex.join(self.argv)}")


class CommandNotFoundError(CommandError):
    """The program of a command is not on ``PATH``."""

    def __init__(self, argv: Sequence[str]) -> None:
        super().__init__(argv, f"program {argv[0]!r} not found on PATH")


class CommandTimeoutError(CommandError):
    """A command did not finish within its timeout.

    Parameters
    ----------
    argv : sequence of str
        The command line.
    timeout : float
        The timeout that expired, s.
    stdout, stderr : str
        Whatever the command printed before it was killed.
    """

    def __init__(self, argv: Sequence[str], timeout: float, stdout: str, stderr: str) -> None:
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(argv, f"command timed out after {timeout:g} s")


class CommandFailedError(CommandError):
    """A command exited with a non-zero exit code.

    Parameters
    ----------
    argv : sequence of str
        The command line.
    returncode : int
        Its exit code (negative: killed by that signal).
    stdout, stderr : str
        What it printed.
    """

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = _tail(stderr) or _tail(stdout) or "no output"
        super().__init__(argv, f"command failed with exit code {returncode} ({detail})")


class SubmitError(HPCError):
    """A submission succeeded as a command but printed no recognisable job id."""


class PollError(HPCError):
    """A status command printed output that could not be parsed."""

"""A FireWorks LaunchPad for tests, in FireWorks' documented mongomock mode.

MongoDB does not install on the test machines, so FireWorks runs on mongomock with its
data in a JSON file (``MONGOMOCK_SERVERSTORE_FILE``, mongomock-persistence). A process reads
that file when it opens the LaunchPad and writes it back when it exits (the matdx executor
writes it when it closes the LaunchPad), with no lock: ``matdx tick``, ``rlaunch`` and
``lpad`` are run one after the other, never at the same time. Every FireWorks process here is
a subprocess with the variable set, as a user's would be.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


@dataclass
class FileLaunchPad:
    """A reset LaunchPad: its YAML file and its mongomock data file."""

    file: Path
    data: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "MONGOMOCK_SERVERSTORE_FILE": str(self.data)}

    def python(self, code: str, timeout: float = 120) -> str:
        """Run Python code with FireWorks on this LaunchPad (``lp`` is opened for it)."""
        prelude = f"from fireworks import LaunchPad\nlp = LaunchPad.from_file({str(self.file)!r})\n"
        done = subprocess.run([sys.executable, "-c", prelude + code], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def rlaunch(self, cwd: Path, *args: str, timeout: float = 600) -> str:
        """``rlaunch rapidfire`` until no Firework is ready; returns its output."""
        done = subprocess.run(
            [str(BIN / "rlaunch"), "-l", str(self.file), *args, "rapidfire"],
            cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    def start_rlaunch(self, cwd: Path) -> subprocess.Popen:
        """``rlaunch rapidfire`` in its own session (to be killed with its children)."""
        return subprocess.Popen(
            [str(BIN / "rlaunch"), "-l", str(self.file), "rapidfire"],
            cwd=cwd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def lpad(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "lpad"), "-l", str(self.file), *args],
                              env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    def collection(self, name: str) -> list[dict[str, Any]]:
        """The documents of a collection as the data file holds them now."""
        from bson import json_util

        databases = json_util.loads(self.data.read_text())
        stored = databases.get("matdx_test", {}).get(name, {"documents": []})
        return [document for _, document in stored["documents"]]


def make_launchpad(directory: Path) -> FileLaunchPad:
    """Write a LaunchPad file and an empty mongomock data file, and reset the LaunchPad."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "mongomock.json"
    data.write_text("{}")
    file = directory / "my_launchpad.yaml"
    file.write_text("host: localhost\nport: 27017\nname: matdx_test\nstrm_lvl: ERROR\n")
    launchpad = FileLaunchPad(file, data)
    launchpad.python("lp.reset('', require_password=False)")
    return launchpad


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL a process started in its own session, and everything it started."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def campaign_file(path: Path, body: str, launchpad: FileLaunchPad) -> Path:
    """A campaign file whose executor is the fireworks executor on ``launchpad``."""
    executor = json.dumps({"type": "fireworks", "launchpad": str(launchpad.file)})
    path.write_text(f"executor: {executor}\n{body}")
    return path

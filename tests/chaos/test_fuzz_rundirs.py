"""Property-based fuzzing (hypothesis) of run directories as harvest reads them.

Each example is a run directory a broken or hostile compute node could leave: ``result.json``
as random bytes, cut short at a random byte, or well-formed with random values; outputs that
are regular files, FIFOs, links to ``/etc``, directories, missing or over the size limit, under
names with ``/``, ``..`` and control characters. Harvest's per-job step must either take the
result (every stored byte coming from a regular file inside the run directory) or refuse it
with a reason: never raise, never hang, never store a byte from outside.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matdx.store.artifacts import ArtifactStore
from matdx.workflows.harvest import _prepare
from matdx.workflows.protocol import ResultFile
from tests.chaos.conftest import FULL

pytestmark = pytest.mark.slow

EXAMPLES = 10_000 if FULL else 200
LIMIT = 4096  # bytes: the campaign's output limit in these trials
PASSWD = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()

names = st.one_of(
    st.sampled_from(["out.txt", "scf/pw.out", "a/b/c.dat"]),
    st.sampled_from(["../x", "/etc/passwd", "a/../../b", "", ".", "a//b", "a\\b", "x\ny",
                     "x\rz", "\x1b[2J", "é/ü.txt", "a" * 300]),
    st.text(min_size=0, max_size=40),
)
kinds = st.sampled_from(["regular", "regular", "regular", "fifo", "link-etc", "directory",
                         "missing", "huge", "link-inside"])
outputs = st.lists(st.tuples(names, names, kinds, st.binary(max_size=200)), max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
shapes = st.sampled_from(["valid", "valid", "torn", "random-bytes", "random-json", "mutated",
                          "empty", "fifo", "link"])


def write_case(run_dir: Path, shape: str, files, cut: float, noise: bytes, value, field: str):
    """Lay out one run directory; returns the names of the hostile things it holds."""
    hostile: set[str] = set()
    output: dict = {"value": value}
    for i, (name, path, kind, content) in enumerate(files):
        relative = path if path and kind != "missing" else f"file{i}"
        target = run_dir / f"file{i}"
        if kind == "regular":
            target.write_bytes(content)
            relative = f"file{i}"
        elif kind == "fifo":
            os.mkfifo(target)
            relative = f"file{i}"
        elif kind == "link-etc":
            target.symlink_to("/etc/passwd")
            relative = f"file{i}"
        elif kind == "link-inside":
            (run_dir / f"real{i}").write_bytes(content)
            target.symlink_to(run_dir / f"real{i}")
            relative = f"file{i}"
        elif kind == "directory":
            target.mkdir()
            relative = f"file{i}"
        elif kind == "huge":
            with open(target, "wb") as handle:
                handle.truncate(LIMIT + 1)
            relative = f"file{i}"
        if kind != "regular":
            hostile.add(kind)
        sha = hashlib.sha256(content).hexdigest()
        output[f"f{i}"] = {"@artifact": {"path": relative, "name": name or f"n{i}",
                                         "media_type": "text/plain", "sha256": sha,
                                         "size": len(content)}}
    result = {"schema_version": 1, "job_id": "job", "attempt": 1, "status": "completed",
              "output": output, "host": "node1", "started_at": 1.0, "finished_at": 2.0}
    text = json.dumps(result).encode()
    result_file = run_dir / "result.json"
    if shape == "valid":
        result_file.write_bytes(text)
    elif shape == "torn":
        result_file.write_bytes(text[: int(len(text) * cut)])
        hostile.add("torn")
    elif shape == "random-bytes":
        result_file.write_bytes(noise)
        hostile.add("random-bytes")
    elif shape == "random-json":
        result_file.write_text(json.dumps(value))
        hostile.add("random-json")
    elif shape == "mutated":
        result[field] = value
        result_file.write_text(json.dumps(result))
        if field == "output":
            hostile = set()  # the outputs are no longer named: nothing hostile is read
    elif shape == "empty":
        result_file.write_bytes(b"")
        hostile.add("empty")
    elif shape == "fifo":
        os.mkfifo(result_file)
        hostile.add("fifo-result")
    elif shape == "link":
        result_file.symlink_to("/etc/passwd")
        hostile.add("link-result")
    return hostile


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(shape=shapes, files=outputs, cut=st.floats(0, 0.999), noise=st.binary(max_size=300),
       value=json_values, field=st.sampled_from(["attempt", "status", "output", "error",
                                                 "versions", "job_id", "response", "extra"]))
def test_harvest_takes_or_refuses_every_run_directory(ledger, shape, files, cut, noise, value,
                                                       field):
    # tmpfs when there is one: these trials test parsing, not fsync latency
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = Path(tempfile.mkdtemp(prefix="matdx-fuzz-", dir=shm))
    try:
        run_dir = root / "run"
        run_dir.mkdir()
        artifacts = ArtifactStore(root / "objects")
        hostile = write_case(run_dir, shape, files, cut, noise, value, field)
        prepared = _prepare(SimpleNamespace(artifacts=artifacts), "job", 1, run_dir, None,
                            LIMIT)
        stored = set(artifacts)
        assert PASSWD not in stored  # nothing from /etc reached the store
        if prepared is None:  # a result naming another job or attempt: left alone
            ledger.trial("fuzz: run directory", evidence="other attempt", survived=True)
            return
        if prepared.refused:
            assert prepared.result["error"]["kind"] == "infrastructure"
            assert prepared.references == []
            ledger.trial("fuzz: run directory", evidence=f"refused: {prepared.refused}",
                         survived=True)
            return
        # taken: only with no hostile part, every reference a regular file's bytes
        assert not (hostile - {"random-json"}), (hostile, prepared.result)
        ResultFile.model_validate(prepared.result)
        for reference in prepared.references:
            assert reference.sha256 in stored
            assert artifacts.verify(reference.sha256).value == "ok"
        ledger.trial("fuzz: run directory", evidence="taken: valid", survived=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

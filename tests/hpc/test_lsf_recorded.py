"""The LSF adapter on ``bjobs -json`` output recorded from a real LSF cluster.

The record was captured at the DKFZ (hosts ``tbi-cn0NN``) by the BatchEuphoria project and
published in its tests (MIT licence): repository TheRoddyWMS/BatchEuphoria, commit
d494f060b23d17ce22116a0644d5443ef2c417c3, file
``src/test/groovy/de/dkfz/roddy/execution/jobs/cluster/lsf/LSFJobManagerSpec.groovy``,
constant ``RAW_JSON_OUTPUT`` (the fixture holds it unchanged, with LSF's ``\\/`` escapes).
A finished job that exited 0 has an empty ``EXIT_CODE``. See tests/hpc/fixtures/README.md.
"""

from __future__ import annotations

from matdx.hpc.lsf import LSFScheduler
from matdx.hpc.status import BatchState

from .conftest import Reply, fixture_text


def test_done_job_with_empty_exit_code_is_completed(fake_runner):
    fake_runner.replies[("bjobs",)] = Reply(
        stdout=fixture_text("lsf_bjobs_done_batcheuphoria.json"))
    status = LSFScheduler(runner=fake_runner).poll(["22005"])["22005"]
    assert (status.state, status.exit_code, status.native_state) == \
        (BatchState.COMPLETED, 0, "DONE")
    assert fake_runner.argvs[0][:3] == ["bjobs", "-a", "-json"]

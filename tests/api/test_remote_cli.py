"""``MATDX_URL`` + ``MATDX_TOKEN``: ``matdx submit``, ``status``, ``results``, ``query``,
``show`` and ``export`` talk to a live service and print (and write) the same as against the
local store."""

from __future__ import annotations

import json
import re

import httpx
import pyarrow.parquet as pq
import pytest

from tests.conftest import matdx_cli

CAMPAIGN = """
name: {name}
executor: {{type: local, workers: 2}}
studies:
  - recipe: eos
    code: emt
    structures:
      - bulk: [Cu]
    settings: {{points: 7, volume_range: 0.05}}
"""
SUBMITTED = re.compile(
    r"submitted campaign (\S+) \(([0-9a-f-]{36})\): (\d+) jobs in (\d+) workflows"
)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_submit_status_and_results_print_the_same_through_the_service(served, tmp_path):
    url, token = served
    remote = {"MATDX_URL": url, "MATDX_TOKEN": token}
    for name in ("remote-eos", "local-eos"):
        (tmp_path / f"{name}.yaml").write_text(CAMPAIGN.format(name=name))
    over_http = matdx_cli("submit", str(tmp_path / "remote-eos.yaml"), env=remote)
    assert over_http.returncode == 0, over_http.stderr
    local = matdx_cli("submit", str(tmp_path / "local-eos.yaml"), check=True)
    sent, made = SUBMITTED.search(over_http.stdout), SUBMITTED.search(local.stdout)
    assert sent and made, (over_http.stdout, local.stdout)
    assert sent.group(1) == "remote-eos" and sent.groups()[2:] == made.groups()[2:]

    bearer = {"Authorization": f"Bearer {token}"}
    for _ in range(30):
        matdx_cli("tick", "--wait", "20", check=True)
        if all(c["done"] for c in httpx.get(f"{url}/campaigns", headers=bearer).json()):
            break
    commands = [
        ("status",),
        ("status", "remote-eos"),
        ("status", sent.group(2)[:8]),
        ("results", "remote-eos"),
        ("results", "local-eos", "--format", "json"),
        ("results", "remote-eos", "--format", "csv"),
    ]
    for command in commands:
        here = matdx_cli(*command, check=True)
        there = matdx_cli(*command, env=remote)
        assert there.returncode == 0, (command, there.stderr)
        assert there.stdout == here.stdout, command
    shown = matdx_cli("results", "remote-eos", "--format", "json", env=remote).stdout
    assert '"B0_GPa"' in shown and '"formula": "Cu"' in shown  # the numbers came through
    fit = json.loads(shown)[0]["record"]  # an 8-character prefix of the fit's record id
    records = {
        ("query", "--elements", "Cu", "--limit", "3", "--count"): "more: add --after",
        ("query", "--calculation", "eos-fit", "--format", "json", "--count"): '"count": 2',
        ("query", "--campaign", "remote-eos", "--range", "B0_GPa=100:", "--format", "csv"): "",
        ("show", fit): "",
        ("show", fit, "--json"): '"B0_GPa"',
    }
    for command, expected in records.items():
        here = matdx_cli(*command, check=True)
        there = matdx_cli(*command, env=remote)
        assert there.returncode == 0, (command, there.stderr)
        assert there.stdout == here.stdout, command
        assert expected in there.stdout, command
    for fmt, name in (("optimade", "out.jsonl"), ("parquet", "out.parquet")):
        select = ("--elements", "Cu", "--campaign", "remote-eos")
        here = matdx_cli("export", fmt, str(tmp_path / f"local-{name}"), *select, check=True)
        there = matdx_cli("export", fmt, str(tmp_path / f"remote-{name}"), *select, env=remote)
        assert there.returncode == 0, there.stderr
        assert there.stdout.replace("remote-", "local-") == here.stdout, fmt
        written = re.search(r": (\d+) record\(s\)$", here.stdout.strip())
        assert written and int(written.group(1)) >= 8, here.stdout  # 7 points and the fit
    local_lines = (tmp_path / "local-out.jsonl").read_text().splitlines()
    remote_lines = (tmp_path / "remote-out.jsonl").read_text().splitlines()
    assert remote_lines[0] == local_lines[0] and len(remote_lines) == len(local_lines)
    assert [json.loads(line) for line in remote_lines[2:]] == [
        json.loads(line) for line in local_lines[2:]
    ]
    assert pq.read_table(tmp_path / "remote-out.parquet").equals(
        pq.read_table(tmp_path / "local-out.parquet")
    )
    again = matdx_cli("export", "optimade", str(tmp_path / "remote-out.jsonl"), env=remote)
    assert again.returncode == 2 and "--overwrite" in again.stderr  # never overwritten
    unsupported = matdx_cli("export", "extxyz", str(tmp_path / "xyz"), env=remote)
    assert unsupported.returncode == 2 and "exports optimade, parquet only" in unsupported.stderr
    claimed = matdx_cli("query", "--user", "bob", env=remote)
    assert claimed.returncode == 2 and "the token" in claimed.stderr

    # refusals come back as one line and exit code 2
    anonymous = matdx_cli("status", "remote-eos", env={"MATDX_URL": url})
    assert anonymous.returncode == 2 and "no visible campaign" in anonymous.stderr
    wrong = matdx_cli("status", env={**remote, "MATDX_TOKEN": "not-a-token"})
    assert wrong.returncode == 2 and "401" in wrong.stderr
    refused = matdx_cli("submit", str(tmp_path / "remote-eos.yaml"), env={"MATDX_URL": url})
    assert refused.returncode == 2 and "401" in refused.stderr and "sign in" in refused.stderr

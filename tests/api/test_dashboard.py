"""The dashboard: its page and files, and the JSON it draws from (a campaign's timeline, its
failed attempts with the corrections applied, the allocation use of its batches)."""

from __future__ import annotations

from pathlib import Path

import pytest

from matdx.api.settings import ServiceSettings
from matdx.store.models import Campaign, JobState
from matdx.workflows import Flow
from tests.workflows import jobs
from tests.workflows.test_engine import campaign

DEBIAN_CHART_JS = Path(ServiceSettings().chart_js)


def test_the_page_its_script_and_chart_js_are_served(http, make_app, tmp_path):
    page = http.get("/dashboard/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for script in ("/dashboard/static/chart.js", "/dashboard/static/dashboard.js"):
        assert script in page.text
    assert http.get("/dashboard", follow_redirects=False).status_code in (302, 307)
    script = http.get("/dashboard/static/dashboard.js")
    assert script.status_code == 200 and "birchMurnaghan" in script.text
    assert "innerHTML" not in script.text  # values from the store are written as text only
    for name in ("..%2F..%2Fapp.py", "dashboard.html.bak", "%2Fetc%2Fpasswd"):
        refused = http.get(f"/dashboard/static/{name}")
        assert refused.status_code == 404, name
    if DEBIAN_CHART_JS.is_file():  # scripts/test installs Debian's libjs-chart.js
        chart = http.get("/dashboard/static/chart.js")
        assert chart.status_code == 200 and chart.content == DEBIAN_CHART_JS.read_bytes()
    missing = make_app(chart_js=str(tmp_path / "nowhere.js")).get("/dashboard/static/chart.js")
    assert missing.status_code == 503 and "libjs-chart.js" in missing.json()["detail"]


@pytest.mark.slow
def test_timeline_failed_attempts_and_allocation_of_a_campaign(
    http, client, store, token_of, store_backend
):
    if store_backend == "postgresql":
        # Several people: alice submits and ticks connected as her own role (so the batches
        # are hers in the database too), and her token acts as that role.
        from sqlalchemy.engine import make_url

        from matdx.client import Client
        from matdx.workflows.executors.local import LocalExecutor

        me = token_of("alice")
        url = make_url(store.url).set(username="alice").render_as_string(hide_password=False)
        client = Client(store.home, url, executors={"local": LocalExecutor(workers=2)})
    failing = jobs.always_fails("input", True)  # corrected 4 times (the kind's budget), fails
    fine = jobs.add(1, 2)
    cid = client.submit(campaign(Flow([failing, fine]), name="watched"))
    client.run(cid, poll_s=0.1, timeout_s=180)
    with store.transaction() as session:
        owner = session.get(Campaign, cid).owner  # who the command line submits as
    if store_backend == "sqlite":
        me = token_of(owner)

    assert http.get(f"/campaigns/{cid}/timeline").status_code == 404  # private to its owner
    answer = http.get(f"/campaigns/{cid}/timeline", headers=me)
    assert answer.status_code == 200, answer.text
    timeline = answer.json()
    times, counts = timeline["t"], timeline["counts"]
    assert times == sorted(times) and len(times) >= 3
    assert counts["pending"][0] + counts["running"][0] >= 1
    last = {name: values[-1] for name, values in counts.items()}
    assert last == {"pending": 0, "running": 0, "completed": 1, "failed": 1, "cancelled": 0}
    assert all(sum(counts[n][i] for n in counts) <= 2 for i in range(len(times)))
    assert max(counts["running"]) >= 1

    attempts = http.get(f"/campaigns/{cid}/attempts", headers=me).json()
    assert [a["attempt"] for a in attempts] == [5, 4, 3, 2, 1]  # latest first
    assert {a["job_id"] for a in attempts} == {failing.id}
    assert all(a["kind"] == "input" and "input failure at step" in a["reason"] for a in attempts)
    assert attempts[0]["correction"] is None and attempts[0]["job_state"] == JobState.FAILED
    first = attempts[-1]["correction"]
    assert first["handler"] == "input_fixer" and first["description"] == "step 0 -> 1"
    assert first["inputs_update"] == {"kwargs": {"step": 1}}

    usage = http.get(f"/campaigns/{cid}/allocation", headers=me).json()
    assert usage["batches"] and usage["completed"] >= 1
    assert all(b["slots"] >= 1 and b["executor"] == "local" for b in usage["batches"])
    assert 0 < usage["utilisation"] <= 1
    assert usage["busy_core_s"] <= usage["allocated_core_s"]
    if store_backend == "postgresql":
        client.store.dispose()  # alice's connections, before her database is dropped

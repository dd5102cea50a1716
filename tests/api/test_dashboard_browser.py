"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromium-driver, watches a campaign that ``matdx tick`` runs while the page is open.

It sees the counts change, opens the E(V) record and finds the Birch–Murnaghan fit drawn
through the calculated points, logs no console error, and saves screenshots under the test's
temporary directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import matdx_cli, wait_for

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")
CAMPAIGN = """
name: watched-eos
executor: {type: local, workers: 1}
studies:
  - recipe: eos
    code: emt
    structures:
      - bulk: [Cu]
    settings: {points: 7, volume_range: 0.06}
"""

pytestmark = pytest.mark.slow


@pytest.fixture
def browser():
    if not (CHROMIUM.exists() and DRIVER.exists() and shutil.which("chromedriver")):
        pytest.fail("needs Debian's chromium and chromium-driver: "
                    "apt-get install chromium chromium-driver (scripts/test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _count(driver, state: str) -> int:
    text = driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : null;",
        f"count-{state}",
    )
    return -1 if text is None else int(text)


@pytest.mark.timeout(900)
def test_the_dashboard_follows_a_running_campaign_and_draws_the_eos_fit(served, browser, tmp_path):
    url, token = served
    spec = tmp_path / "watched.yaml"
    spec.write_text(CAMPAIGN)
    matdx_cli("submit", str(spec), check=True)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    browser.get(f"{url}/dashboard/?every=0.5#token={token}")
    wait_for(lambda: _count(browser, "total") > 0, timeout=60, interval=0.2)
    total = _count(browser, "total")
    assert _count(browser, "COMPLETED") == 0  # nothing has run yet
    browser.save_screenshot(str(shots / "1-submitted.png"))
    assert "#token" not in browser.current_url  # the secret leaves the address bar

    seen = {0}
    for _ in range(40):
        matdx_cli("tick", "--wait", "20", check=True)
        # the page catches up by itself (polling): wait for it to show the store's count
        done = (
            httpx.get(f"{url}/campaigns", headers={"Authorization": f"Bearer {token}"})
            .json()[0]["counts"]
            .get("COMPLETED", 0)
        )
        wait_for(lambda done=done: _count(browser, "COMPLETED") == done, timeout=30)
        seen.add(done)
        if len(seen) == 2:
            browser.save_screenshot(str(shots / "2-running.png"))
        if done == total:
            break
    assert _count(browser, "COMPLETED") == total and len(seen) >= 2, seen
    browser.save_screenshot(str(shots / "3-done.png"))

    # the list is redrawn at every poll: find and click the button in one step
    wait_for(
        lambda: browser.execute_script("""
        const button = document.querySelector("#records button[data-calculation='eos-fit']");
        if (button) button.click();
        return button !== null;
    """),
        timeout=30,
    )
    wait_for(
        lambda: browser.execute_script(
            "return document.getElementById('plot').dataset.kind === 'eos'"
        ),
        timeout=30,
    )
    drawn = browser.execute_script("""
        const chart = window.matdxDashboard.charts.plot0;
        return chart.data.datasets.map(d => ({label: d.label, points: d.data}));
    """)
    fit, points = drawn
    assert fit["label"] == "Birch–Murnaghan fit" and len(fit["points"]) == 200
    assert points["label"] == "calculations" and len(points["points"]) == 7
    # the fit passes through the calculated points (within a few meV) and has its minimum
    # inside the sampled range
    xs = [p["x"] for p in fit["points"]]
    for point in points["points"]:
        nearest = min(range(len(xs)), key=lambda i: abs(xs[i] - point["x"]))
        assert abs(fit["points"][nearest]["y"] - point["y"]) < 5e-3
    lowest = min(fit["points"], key=lambda p: p["y"])
    assert xs[0] < lowest["x"] < xs[-1] and abs(lowest["y"]) < 1e-3
    subtitle = browser.find_element("id", "plot-subtitle").text
    assert subtitle.startswith("B0 = ") and "GPa" in subtitle
    browser.save_screenshot(str(shots / "4-eos-fit.png"))

    assert browser.find_element("id", "error").text == ""
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == [], severe
    assert sorted(p.name for p in shots.iterdir()) == [
        "1-submitted.png",
        "2-running.png",
        "3-done.png",
        "4-eos-fit.png",
    ]

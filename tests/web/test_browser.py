"""End to end in a real browser: headless Chromium (Selenium 4, the system's chromium and
chromedriver) against the real app under uvicorn on 127.0.0.1, over a workspace that went
through three real cycles and a round of users' feedback.

With ``FLYWHEEL_SCREENSHOTS=1`` the screenshots (1280x900) are also copied to ``docs/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import select

from api.app import create_app
from flywheel.cli.demo_feedback import simulate_feedback
from flywheel.config import Settings
from flywheel.cycle.runner import run_cycle
from flywheel.db import GroundTruth, Label
from flywheel.learn.registry import ModelRegistry
from flywheel.serve.api_keys import create_key
from flywheel.store.ingest import SplitPlan, ingest_candidates
from flywheel.store.ingest_sources import digits_candidates
from flywheel.workspace import Workspace, open_workspace
from tests.api.conftest import serve_in_thread

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)
# Small enough for 2 CPU cores (~10 s for three cycles), good enough to look like a project.
LEARNING = {
    "ssl_epochs": 4,
    "train_epochs": 10,
    "fixmatch_epochs": 2,
    "steps_per_epoch": 4,
    "width": 16,
    "batch_size": 32,
    "augment": "digits",
}
WRONG_HUMAN_LABELS = 8  # an annotator's mistakes, for the label audit to find


@dataclass(frozen=True)
class Site:
    url: str
    ws: Workspace
    engineer: str
    app: str
    shots: Path


def _add_wrong_labels(ws: Workspace) -> None:
    """An intern labels a few pool samples wrong (the truth shifted by one class)."""
    with ws.db.session() as s:
        truth = s.execute(
            select(GroundTruth.sample_id, GroundTruth.label).order_by(GroundTruth.sample_id)
        ).all()
        for sid, label in truth[:WRONG_HUMAN_LABELS]:
            wrong = str((int(label) + 1) % 10)
            s.add(
                Label(
                    sample_id=sid,
                    label=wrong,
                    source="human",
                    method="manual",
                    annotator="intern",
                    confidence=1.0,
                )
            )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("ui")
    settings = Settings(
        data_dir=root / "data",
        learning=LEARNING,
        # No cycles started from the page here; revocations seen at once.
        api={"auth_cache_seconds": 0, "run_cycles_in_process": False},
        # 30 seed labels and the pseudo-labels the certified selection dares on 240 digits
        # are the drift reference: fewer than the default 50 when the models are this small.
        drift={"min_recent": 30},
    )
    ws = open_workspace(settings)
    plan = SplitPlan(labels_per_class=3, test_fraction=0.2, seed=0)
    ingest_candidates(ws.db, ws.blobs, digits_candidates()[:300], "digits", settings.ingest, plan)
    ws.versions.snapshot("seed labels")
    registry = ModelRegistry.from_settings(settings)
    for _ in range(3):
        run_cycle(ws, registry, settings.learning)
    simulate_feedback(ws, registry, 60, seed=0)  # users' votes: conflicts and annotator stats
    _add_wrong_labels(ws)
    engineer = create_key(ws.db, "engineer", "ml", "ml team")[1]
    app = create_key(ws.db, "app", "shop", "shop app")[1]
    with serve_in_thread(create_app(settings)) as url:
        yield Site(url, ws, engineer, app, root / "shots")
    ws.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: run `make browser` (as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition, seconds: float = 30.0):  # type: ignore[no-untyped-def]
    return WebDriverWait(driver, seconds).until(condition)


def images_loaded(driver: WebDriver) -> bool:
    """Every image shown in view has arrived (lazy ones below the fold, or in a hidden
    review item, load only once they are shown)."""
    script = """return [...document.images]
        .filter(i => i.getClientRects().length > 0)
        .filter(i => i.loading !== "lazy" || i.getBoundingClientRect().top < innerHeight)
        .every(i => i.complete && i.naturalWidth > 0)"""
    return bool(driver.execute_script(script))


def screenshot(driver: WebDriver, site: Site, name: str) -> None:
    site.shots.mkdir(parents=True, exist_ok=True)
    path = site.shots / f"ui_{name}.png"
    assert driver.save_screenshot(str(path)), name
    if os.environ.get("FLYWHEEL_SCREENSHOTS") == "1":
        shutil.copy(path, REPO / "docs" / path.name)


def log_in(driver: WebDriver, site: Site, key: str) -> None:
    field = driver.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key)
    field.send_keys(Keys.ENTER)


def press(driver: WebDriver, *keys: str) -> None:
    """Keys typed at the page (no element clicked): what a reviewer's keyboard sends."""
    ActionChains(driver).send_keys(*keys).perform()


def state_of(driver: WebDriver, index: int) -> str | None:
    return driver.find_elements(By.CSS_SELECTOR, ".qitem")[index].get_attribute("data-state")


def test_login_review_and_insights_in_a_browser(browser: WebDriver, site: Site) -> None:
    d = browser
    # Not logged in: every page sends the browser to the login form.
    d.get(f"{site.url}/ui/review")
    wait(d, lambda d: "/ui/login" in d.current_url)
    assert d.find_element(By.TAG_NAME, "h1").text == "Log in"
    screenshot(d, site, "login")

    log_in(d, site, "fw_nope_wrong")
    error = wait(d, lambda d: d.find_elements(By.ID, "login-error"))[0]
    assert "Unknown, malformed or revoked key" in error.text

    log_in(d, site, site.app)  # an app key is refused: it cannot open engineer pages
    error = wait(d, lambda d: d.find_elements(By.ID, "login-error"))[0]
    assert "Engineer key required" in error.text
    d.get(f"{site.url}/ui/audit")
    wait(d, lambda d: "/ui/login" in d.current_url)

    # The engineer key: back to the page that was asked for.
    log_in(d, site, site.engineer)
    wait(d, lambda d: d.current_url.endswith("/ui/audit"))
    assert d.find_element(By.TAG_NAME, "h1").text == "Label audit"

    # Dashboard: three cycles, chart and embedding map drawn, champion and challenger.
    d.get(f"{site.url}/ui/")
    rows = d.find_elements(By.CSS_SELECTOR, "#cycles-table tbody tr")
    assert len(rows) == 3
    assert {r.find_elements(By.TAG_NAME, "td")[1].text for r in rows} <= {"promoted", "rejected"}
    wait(d, images_loaded, 90)  # the embedding map is drawn on first request
    assert d.find_element(By.ID, "embedding-map").get_attribute("naturalWidth") != "0"
    assert "champion" in d.find_element(By.ID, "models").text
    assert d.find_elements(By.ID, "drift-verdict")  # 60 recent inputs: a verdict
    screenshot(d, site, "dashboard")
    d.execute_script("document.getElementById('models').scrollIntoView()")
    screenshot(d, site, "dashboard_models")

    # Label audit: the intern's wrong labels are among the issues; queue them for review.
    d.get(f"{site.url}/ui/audit")
    assert int(d.find_element(By.ID, "issue-count").text) > 0
    assert "intern" in d.find_element(By.ID, "issues").text
    assert d.find_elements(By.CSS_SELECTOR, "#reliability tbody tr")  # annotators measured
    assert d.find_element(By.ID, "fleiss").text.startswith(("0.", "-0.", "1.0"))
    wait(d, images_loaded)
    screenshot(d, site, "audit")
    d.find_element(By.ID, "queue-audit").click()
    wait(d, lambda d: "/ui/review" in d.current_url)
    assert "queued for review" in d.find_element(By.CSS_SELECTOR, ".flash").text

    # Review three items with the keyboard only: accept, a digit, and the picker.
    wait(d, images_loaded)
    items = d.find_elements(By.CSS_SELECTOR, ".detail")
    assert len(items) >= 4
    proposed = [i.get_attribute("data-proposed") for i in items[:3]]
    sample_ids = [
        i.find_element(By.CSS_SELECTOR, "figure.big img").get_attribute("src").split("/")[-1][:64]
        for i in items[:3]
    ]
    press(d, "a")
    wait(d, lambda d: state_of(d, 0) == "accepted")
    digit = str((int(proposed[1]) + 1) % 10)  # the digit keys name the digit labels
    press(d, digit)
    wait(d, lambda d: state_of(d, 1) == "accepted")
    focused = d.find_element(By.CSS_SELECTOR, ".qitem.focused").get_attribute("data-index")
    assert focused == "2"  # focus moved on to the next open item
    press(d, "j")
    assert d.find_element(By.CSS_SELECTOR, ".qitem.focused").get_attribute("data-index") == "3"
    press(d, "k")
    assert d.find_element(By.CSS_SELECTOR, ".qitem.focused").get_attribute("data-index") == "2"
    third = str((int(proposed[2]) + 2) % 10)
    press(d, "c")
    wait(d, lambda d: d.find_element(By.ID, "picker").get_attribute("open") is not None)
    press(d, third, Keys.ENTER)
    wait(d, lambda d: state_of(d, 2) == "accepted")
    assert state_of(d, 3) == "open"
    press(d, "?")
    wait(d, lambda d: d.find_element(By.ID, "help").get_attribute("open") is not None)
    press(d, Keys.ESCAPE)
    assert d.find_element(By.ID, "help").get_attribute("open") is None
    # For the picture: move on (j) to the first uncertain pseudo-label, with its neighbours.
    reasons = [i.get_attribute("data-reason") for i in items]
    for _ in range(reasons.index("uncertain") - 2):
        press(d, "j")
    wait(d, images_loaded)
    wait(d, lambda d: d.find_element(By.ID, "toast").get_attribute("class") == "")
    screenshot(d, site, "review")
    chosen = {sample_ids[0]: proposed[0], sample_ids[1]: digit, sample_ids[2]: third}

    # The next dataset version counts the three as human labels, by this reviewer.
    bearer = {"Authorization": f"Bearer {site.engineer}"}
    with httpx.Client(base_url=site.url, headers=bearer) as api:
        decided = api.get("/v1/review", params={"state": "accepted"}).json()
        assert {i["sample_id"]: i["decided_label"] for i in decided["items"]} == chosen
        version, created = site.ws.versions.snapshot("after review")
        assert created
        latest = api.get("/v1/datasets/versions/latest").json()
        assert latest["id"] == version.id and latest["stats"]["by_source"]["human"] >= 3
    _, table = site.ws.versions.read(version.id)
    rows_by_id = {r["sample_id"]: r for r in table.to_pylist()}
    for sid, label in chosen.items():
        assert (rows_by_id[sid]["label"], rows_by_id[sid]["source"]) == (label, "human")
        assert rows_by_id[sid]["annotator"].startswith("ml team [")

    # Dashboard: the new version is listed first; diff it against the one before.
    d.get(f"{site.url}/ui/")
    first_version = d.find_element(By.CSS_SELECTOR, "#versions tbody tr td.mono")
    assert first_version.text == version.id[:12]
    d.execute_script("document.getElementById('versions').scrollIntoView()")
    d.find_element(By.ID, "diff-submit").click()
    wait(d, lambda d: "/ui/datasets/diff" in d.current_url)
    counts = {
        e.get_attribute("data-kind"): int(e.text)
        for e in d.find_elements(By.CSS_SELECTOR, "#diff-counts b")
    }
    assert counts["added"] + counts["relabeled"] + counts["reattributed"] >= 3
    assert "human" in d.find_element(By.ID, "diff-summary").text
    wait(d, images_loaded)
    screenshot(d, site, "diff")

    # Nothing on the pages broke in the browser (scripts, the content security policy).
    problems = [
        e["message"]
        for e in d.get_log("browser")
        if e["level"] == "SEVERE"
        and "status of 403" not in e["message"]  # the app key
        and "status of 401" not in e["message"]
    ]
    assert not problems, problems

    # Logging out ends the session.
    d.get(f"{site.url}/ui/")
    d.find_element(By.CSS_SELECTOR, ".who button").click()
    wait(d, lambda d: "/ui/login" in d.current_url)
    d.get(f"{site.url}/ui/review")
    wait(d, lambda d: "/ui/login" in d.current_url)


def test_browser_keeps_the_session_cookie_from_scripts(browser: WebDriver, site: Site) -> None:
    """HttpOnly: page scripts cannot read the session cookie (an XSS could not steal it)."""
    browser.get(f"{site.url}/ui/login")
    log_in(browser, site, site.engineer)
    wait(browser, lambda d: d.current_url.endswith("/ui/"))
    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert cookies["flywheel_session"]["httpOnly"] is True
    assert cookies["flywheel_session"]["sameSite"] == "Strict"
    try:
        visible = browser.execute_script("return document.cookie")
    except WebDriverException:  # pragma: no cover - a driver that refuses scripts
        visible = ""
    assert "flywheel_session" not in visible

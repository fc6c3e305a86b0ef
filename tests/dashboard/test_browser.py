"""The dashboard in a real browser: Playwright driving Debian's chromium (never a downloaded one).

The app is served by a thread (werkzeug) on the embedded default (SQLite + ``memory://``), with an
in-process coordinator and worker, as ``flow up`` wires them; the HTTP steps call a local sink.
Screenshots of the main pages land in ``test-artifacts/`` (gitignored). Under ``CI=true`` a missing
chromium or Playwright is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from engine.settings import Settings
from tests.dashboard.conftest import HOSTILE, PASSWORD, unique
from tests.http_sink import Request, Sink

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TASK_TYPES = ("http_request", "data_processing", "compensation", "noop")

SHOP = """flow 1

workflow shop(base: string, order: string = "o-1", quantity: int = 1) {
  doc "Charge, then ship; a refund undoes the charge."
  defaults { timeout 5s  retry { attempts: 1 } }
  step charge: http {
    method: "POST"  url: "${params.base}/charge"
    headers: { "Idempotency-Key": "charge-${params.order}" }
    body: { order: params.order, quantity: params.quantity }
    compensate http { method: "POST", url: "${params.base}/refund", body: { order: params.order } }
  }
  step ship: http {
    after charge
    method: "POST"  url: "${params.base}/ship"
    headers: { "Idempotency-Key": "ship-${params.order}" }
    body: { order: params.order }
    compensate none "the parcel has left"
  }
  output { shipped: steps.ship.output.status == 200 }
}

workflow flaky(base: string, key: string) {
  doc "Fails the first time, works when retried."
  defaults { timeout 5s  retry { attempts: 1 } }
  step call: http {
    method: "POST"  url: "${params.base}/flaky"
    headers: { "Idempotency-Key": "flaky-${params.key}" }
    body: { key: params.key }
    compensate none "test endpoint"
  }
}
"""


def _chromium() -> Any:
    """The sync Playwright module, or skip (fail under CI) when it or chromium is missing."""
    reason = None
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        from playwright import sync_api
    except ImportError:
        reason = reason or "playwright is not installed (pip install -e '.[test]')"
        sync_api = None
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return sync_api


class Flaky:
    """The sink's answers: /flaky fails with 500 the first time a key is seen."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, request: Request) -> tuple[int, Any]:
        if request.path == "/flaky":
            key = (request.body or {}).get("key")
            if key not in self.seen:
                self.seen.add(key)
                return 500, {"error": "try again"}
        return 200, {"ok": True, "path": request.path}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from werkzeug.serving import make_server

    from engine.runtime.coordinator import Coordinator
    from engine.runtime.messaging import Broker
    from web import create_app
    from workers.consumer import Worker

    sink = Sink(Flaky()).start()
    data_dir = tmp_path_factory.mktemp("flow")
    settings = Settings(database_url=f"sqlite:///{data_dir}/flow.db", broker_url="memory://",
                        data_dir=str(data_dir), secret_key="browser-test-key", http_allowlist=("127.0.0.1",),
                        api_token="browser-test-token")  # auth on, so the test logs in
    app = create_app({"TESTING": False}, settings=settings)
    store = app.extensions["flow"].store
    store.deploy(SHOP, "shop.flow")
    username = unique("ops")
    store.create_user(username, PASSWORD, "operator")
    app.extensions["flow"].schedules.create_recurring_task("data_processing", {"operation": "noop"},
                                                           "0 3 * * *", "Europe/Berlin")

    stop = threading.Event()
    broker = Broker(settings)
    coordinator = Coordinator(store, broker, settings, task_types=TASK_TYPES)
    worker = Worker(settings, TASK_TYPES, concurrency=4, grace_period=2)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    threads = [threading.Thread(target=coordinator.run, args=(stop,), daemon=True),
               threading.Thread(target=worker.run, args=(stop,), daemon=True),
               threading.Thread(target=http.serve_forever, daemon=True)]
    for thread in threads:
        thread.start()
    assert worker.consuming.wait(15), "the worker did not start consuming"
    try:
        yield {"url": f"http://127.0.0.1:{http.server_port}", "username": username, "sink": sink, "store": store}
    finally:
        http.shutdown()
        stop.set()
        for thread in threads:
            thread.join(10)
        broker.close()
        sink.stop()
        app.extensions["flow"].db.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = _chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class Session:
    """A logged-in page that records every request and every console message."""

    def __init__(self, browser: Any, server: dict[str, Any], viewport: dict[str, int] | None = None) -> None:
        self.base = server["url"]
        self.context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.requests: list[str] = []
        self.console: list[str] = []
        self.page.on("request", lambda r: self.requests.append(f"{r.method} {r.url}"))
        self.page.on("console", lambda m: self.console.append(m.text))
        self.page.on("dialog", lambda d: d.accept())  # hx-confirm: the operator says yes
        self.page.goto(f"{self.base}/")
        self.page.fill("#username", server["username"])
        self.page.fill("#password", PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(f"{self.base}/")

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)

    def shot(self, name: str, full_page: bool = True) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        # caret="initial": hiding the caret would make Playwright inject a <style> that the CSP refuses
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page, caret="initial")

    def run_status(self, expected: str) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator("#run-status")).to_have_text(expected, timeout=20_000)

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m or "Refused to" in m]


@pytest.fixture
def session(browser: Any, server: dict[str, Any]) -> Iterator[Session]:
    session = Session(browser, server)
    yield session
    assert not session.csp_violations(), session.csp_violations()
    session.context.close()


def start_from_form(session: Session, workflow: str, values: dict[str, str]) -> str:
    session.goto(f"/workflows/{workflow}")
    for name, value in values.items():
        session.page.fill(f"#param-{name}", value)
    session.page.click("#start-form button[type=submit]")
    session.page.wait_for_url(f"{session.base}/runs/*")
    return session.page.url.rsplit("/", 1)[1]


def test_start_a_run_from_the_form_and_watch_it_complete(session: Session, server: dict[str, Any]) -> None:
    session.shot("overview")
    # Given the workflow page, When the form is sent with a bad quantity, Then the error is next to it
    session.goto("/workflows/shop")
    session.shot("workflow")
    session.page.fill("#param-base", server["sink"].url)
    session.page.fill("#param-quantity", "many")
    session.page.click("#start-form button[type=submit]")
    assert "enter a whole number" in session.page.locator("#err-quantity").inner_text()
    assert session.page.url.endswith("/workflows/shop")
    session.shot("workflow-form-error", full_page=False)
    # When it is corrected, Then the run page opens and updates itself until the run completes
    session.page.fill("#param-quantity", "2")
    session.page.click("#start-form button[type=submit]")
    session.page.wait_for_url(f"{session.base}/runs/*")
    session.run_status("completed")
    assert session.page.locator('g.node.status-completed[data-step="ship"]').count() == 1
    session.shot("run-completed")
    session.goto("/runs")
    session.shot("runs")


def test_retry_a_failed_run(session: Session, server: dict[str, Any]) -> None:
    run_id = start_from_form(session, "flaky", {"base": server["sink"].url, "key": unique("k")})
    session.run_status("failed")
    session.shot("run-failed")
    session.page.click("form[action$='/retry'] button")
    session.run_status("completed")
    assert "Retrying the run" in session.page.locator("#run-notice").inner_text() or \
        server["store"].get_run(run_id)["status"] == "completed"
    session.goto("/dead-letters")
    session.shot("dead-letters")
    session.goto("/schedules")
    session.shot("schedules")


def test_compensate_a_run(session: Session, server: dict[str, Any]) -> None:
    order = unique("order")
    start_from_form(session, "shop", {"base": server["sink"].url, "order": order})
    session.run_status("completed")
    session.page.click("form[action$='/compensate'] button")
    session.run_status("compensated")
    assert [r.body for r in server["sink"].effects("/refund")][-1] == {"order": order}
    session.shot("run-compensated")
    # The run page names who compensated it, beside its history
    session.page.reload()
    audit = session.page.locator("section[aria-labelledby=h-audit]")
    assert "run.compensate" in audit.inner_text() and server["username"] in audit.inner_text()


def test_the_session_cookie_flags_in_the_browser(session: Session) -> None:
    cookie = next(c for c in session.context.cookies() if c["name"] == "flow_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and cookie["secure"] is False
    assert session.page.evaluate("() => document.cookie") == ""  # HttpOnly: scripts cannot read it


def test_a_disabled_users_open_page_goes_to_the_login_page(browser: Any, server: dict[str, Any]) -> None:
    # Given a user logged in, with the runs page open
    username = unique("leaver")
    server["store"].create_user(username, PASSWORD, "admin")
    session = Session(browser, {**server, "username": username})
    session.goto("/runs")
    # When an admin disables the account
    server["store"].disable_user(username)
    # Then the next click lands on the login page, which says why
    session.page.click("nav a[href='/workflows']")
    session.page.wait_for_url(f"{session.base}/login**")
    assert "Your account was disabled." in session.page.locator("main").inner_text()
    session.shot("login-disabled", full_page=False)
    session.context.close()


def test_the_login_form_says_when_it_is_throttled(browser: Any, server: dict[str, Any]) -> None:
    username = unique("target")
    server["store"].create_user(username, PASSWORD, "viewer")
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    for _ in range(6):  # five wrong passwords, then the right one
        page.goto(f"{server['url']}/login")
        page.fill("#username", username)
        page.fill("#password", "wrong password" if _ < 5 else PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state()
    assert "Too many failed logins" in page.locator("main").inner_text()
    assert page.url.endswith("/login")
    context.close()


def test_hostile_payload_neither_runs_nor_sends_a_request(session: Session, server: dict[str, Any]) -> None:
    run_id = start_from_form(session, "shop", {"base": server["sink"].url, "order": HOSTILE})
    session.run_status("completed")
    session.page.locator("details").first.evaluate("d => d.open = true")
    session.page.wait_for_timeout(1500)  # time for any hx-trigger="load" to fire, if it could
    assert session.page.evaluate("() => window.pwned") is None
    assert session.page.locator("img[src=x]").count() == 0
    assert not [r for r in session.requests if "/runs/x/cancel" in r], session.requests
    assert "window.pwned" in session.page.content()  # shown, as text
    session.shot("run-hostile")
    assert server["store"].get_run(run_id)["status"] == "completed"


def test_readable_on_a_phone_and_with_the_keyboard(browser: Any, server: dict[str, Any]) -> None:
    phone = Session(browser, server, viewport={"width": 390, "height": 844})
    try:
        phone.shot("phone-overview")
        phone.goto("/runs")
        phone.shot("phone-runs")
        # the page is no wider than the phone: tables scroll inside their own box
        width = phone.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 392, width
        # keyboard: the first Tab reaches the skip link, Enter moves to the content
        phone.page.keyboard.press("Tab")
        assert phone.page.evaluate("() => document.activeElement.className") == "skip"
        assert not phone.csp_violations(), phone.csp_violations()
    finally:
        phone.context.close()

"""Backfill from the schedules page and search runs by business keys, in a real browser (Playwright
driving Debian's chromium), with htmx swapping the forms' answers in place."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from engine.store.schedule_deploys import deploy_with_schedules
from tests.dashboard.conftest import unique
from tests.dashboard.test_browser import Session, browser, server  # noqa: F401 (fixtures)

NIGHTLY = """flow 1

workflow {name}(order_id: int = 0) {{
  schedule cron "0 3 * * *" {{ params: {{ order_id: 4711 }} }}
  search {{ order: params.order_id, day: workflow.scheduled_at }}
  step report: noop {{ output: workflow.scheduled_at }}
}}
"""


@pytest.fixture
def session(browser: Any, server: dict[str, Any]) -> Iterator[Session]:  # noqa: F811
    session = Session(browser, server)
    yield session
    assert not session.csp_violations(), session.csp_violations()
    session.context.close()


def backfill_form(session: Session, name: str, start: str, end: str, dry_run: bool) -> None:
    row = session.page.locator("#schedules tr", has_text=name)
    row.locator("details.backfill summary").click()
    row.locator("input[name=from]").fill(start)
    row.locator("input[name=to]").fill(end)
    if dry_run:
        row.locator("input[name=dry_run]").check()
    row.locator("details.backfill button[type=submit]").click()


def test_backfill_from_the_schedules_page_then_find_a_run_by_its_keys(session: Session,
                                                                      server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    name = unique("nightly")
    deploy_with_schedules(server["store"], NIGHTLY.format(name=name), "nightly.flow")
    session.goto("/schedules")
    # A dry run lists the fire times in place and starts nothing
    backfill_form(session, name, "2026-01-01T00:00:00", "2026-01-03T00:00:00", dry_run=True)
    expect(session.page.locator("#schedules")).to_contain_text("Dry run: 2 fire times in the range, 0 already fired")
    assert server["store"].list_runs(workflow=name)["runs"] == []
    # The backfill starts one run per fire time; a second one starts nothing
    backfill_form(session, name, "2026-01-01T00:00:00", "2026-01-03T00:00:00", dry_run=False)
    expect(session.page.locator("#schedules")).to_contain_text("2 started, 0 queued")
    session.shot("schedules-backfilled")
    backfill_form(session, name, "2026-01-01T00:00:00", "2026-01-03T00:00:00", dry_run=False)
    expect(session.page.locator("#schedules")).to_contain_text("2 already fired. Nothing to start.")
    # The runs list shows them as backfills, and the search box finds one by its fire time
    session.goto(f"/runs?workflow={name}")
    expect(session.page.locator("#runs span.badge.backfill")).to_have_count(2)
    session.page.fill("#f-search", "day=2026-01-02T03:00:00+00:00")
    session.page.click("form.filters button[type=submit]")
    expect(session.page.locator("#runs tbody tr")).to_have_count(1)
    expect(session.page.locator("#runs tbody")).to_contain_text("day=2026-01-02T03:00:00+00:00")
    assert "search=day" in session.page.url  # hx-push-url: the search is in the address, to share
    session.shot("runs-searched")
    # A key link narrows the list to the runs sharing that key
    session.page.locator("#runs td.keys a", has_text="order=4711").first.click()
    expect(session.page.locator("#f-search")).to_have_value("order=4711")
    expect(session.page.locator("#runs span.badge.backfill")).to_have_count(2)

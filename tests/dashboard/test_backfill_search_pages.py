"""The schedules page backfills a past range; the runs list finds runs by business keys and marks
backfills (Flask test client, real PostgreSQL)."""

from __future__ import annotations

import html as html_lib
import uuid

from engine.store import backfill as backfills
from engine.store.schedule_deploys import deploy_with_schedules
from tests.dashboard.conftest import LoggedIn, unique

NIGHTLY = """flow 1

workflow {name}(order_id: int = 0, customer: string = "nobody") {{
  schedule cron "0 3 * * *"
  search {{ order: params.order_id, customer: params.customer }}
  step report: noop {{ output: workflow.scheduled_at }}
}}
"""


def deploy(operator: LoggedIn) -> tuple[str, str]:
    name = unique("nightly")
    schedules = operator.app.extensions["flow"].schedules
    deploy_with_schedules(operator.store, NIGHTLY.format(name=name), "nightly.flow", schedules)
    schedule_id = next(s.id for s in schedules.list_schedules() if s.workflow_name == name)
    return name, schedule_id


def test_the_schedules_page_backfills_a_range_once(operator: LoggedIn) -> None:
    name, schedule_id = deploy(operator)
    page = operator.get("/schedules").get_data(as_text=True)
    assert f"/schedules/{schedule_id}/backfill" in page and "Backfill…" in page
    # A dry run lists the fire times and starts nothing
    dry = operator.post(f"/schedules/{schedule_id}/backfill",
                        {"from": "2026-01-01T00:00", "to": "2026-01-03T00:00", "dry_run": "1"})
    text = html_lib.unescape(dry.get_data(as_text=True))
    assert dry.status_code == 200 and "Dry run: 2 fire times in the range, 0 already fired. Would run 2" in text
    assert operator.store.list_runs(workflow=name)["runs"] == []
    # The backfill starts one run per fire time; a second one starts nothing
    done = operator.post(f"/schedules/{schedule_id}/backfill", {"from": "2026-01-01T00:00", "to": "2026-01-03T00:00"})
    assert "Backfill started: 2 fire times in the range, 0 already fired. 2 started, 0 queued" in html_lib.unescape(
        done.get_data(as_text=True))
    again = operator.post(f"/schedules/{schedule_id}/backfill", {"from": "2026-01-01T00:00", "to": "2026-01-03T00:00"},
                          htmx=False)
    assert again.status_code == 303
    assert "2 already fired. Nothing to start." in html_lib.unescape(operator.get("/schedules").get_data(as_text=True))
    runs = operator.store.list_runs(workflow=name)["runs"]
    assert sorted(r["scheduled_at"] for r in runs) == ["2026-01-01T03:00:00+00:00", "2026-01-02T03:00:00+00:00"]
    # The runs list marks them as backfills
    listed = operator.get(f"/runs?workflow={name}").get_data(as_text=True)
    assert listed.count('class="badge backfill"') == 2


def test_a_bad_backfill_form_says_what_is_wrong(operator: LoggedIn) -> None:
    _, schedule_id = deploy(operator)
    bad = operator.post(f"/schedules/{schedule_id}/backfill", {"from": "2026-01-03T00:00", "to": "2026-01-01T00:00"})
    assert bad.status_code == 422 and "Not backfilled: the range is empty" in bad.get_data(as_text=True)
    missing = operator.post(f"/schedules/{schedule_id}/backfill", {"from": "soon", "to": "2026-01-01T00:00"})
    assert missing.status_code == 422 and "from: &#39;soon&#39; is not a time" in missing.get_data(as_text=True)
    assert operator.post("/schedules/nope/backfill", {"from": "2026-01-01", "to": "2026-01-02"}).status_code == 404


def test_a_backfill_needs_an_operator_and_a_csrf_token(operator: LoggedIn) -> None:
    _, schedule_id = deploy(operator)
    form = {"from": "2026-01-01T00:00", "to": "2026-01-02T00:00"}
    assert operator.post(f"/schedules/{schedule_id}/backfill", form, token=False).status_code in (400, 403)
    viewer = LoggedIn(operator.app, "viewer")
    assert viewer.post(f"/schedules/{schedule_id}/backfill", form).status_code == 403
    assert f"/schedules/{schedule_id}/backfill" not in viewer.get("/schedules").get_data(as_text=True)


def test_the_runs_page_finds_a_run_by_its_business_keys(operator: LoggedIn) -> None:
    name, _ = deploy(operator)
    order = 900_000 + uuid.uuid4().int % 100_000
    customer = f"acme {uuid.uuid4().hex[:6]}"
    wanted = operator.store.start_run(name, {"order_id": order, "customer": customer})
    other = operator.store.start_run(name, {"order_id": order + 1, "customer": customer})
    page = operator.get(f"/runs?search=order%3D{order}").get_data(as_text=True)
    assert 'name="search"' in page and f'value="order={order}"' in page
    assert wanted[:8] in page and other[:8] not in page
    # A quoted value with a space, and two terms that must both match
    quoted = operator.client.get("/runs", query_string={"search": f'customer="{customer}" order={order + 1}'})
    body = quoted.get_data(as_text=True)
    assert other[:8] in body and wanted[:8] not in body
    # Each run's keys link to the runs that share them
    assert f"order={order}</code>" in page
    # A term without `=` is explained, not ignored
    bad = operator.get("/runs?search=4711").get_data(as_text=True)
    assert "search: `4711`: write KEY=VALUE, e.g. order=4711" in html_lib.unescape(bad)


WAITS = NIGHTLY.replace("step report: noop {{ output: workflow.scheduled_at }}", "step sign_off: approval {{ }}")


def test_recent_backfills_are_listed_and_a_queued_one_can_be_cancelled(operator: LoggedIn) -> None:
    name = unique("gated")
    schedules = operator.app.extensions["flow"].schedules
    deploy_with_schedules(operator.store, WAITS.format(name=name), "gated.flow", schedules)
    schedule_id = next(s.id for s in schedules.list_schedules() if s.workflow_name == name)
    started = operator.post(f"/schedules/{schedule_id}/backfill",
                            {"from": "2026-02-01T00:00", "to": "2026-02-04T00:00", "max_parallel": "1"})
    body = html_lib.unescape(started.get_data(as_text=True))
    assert "1 started, 2 queued" in body and "Recent backfills" in body and "2 queued" in body
    backfill_id = backfills.list_backfills(schedules, schedule_id)[0]["id"]
    cancel = f"/schedules/{schedule_id}/backfills/{backfill_id}/cancel"
    assert cancel in body
    cancelled = operator.post(cancel)
    assert cancelled.status_code == 200
    assert "Backfill cancelled: 2 queued fires dropped" in html_lib.unescape(cancelled.get_data(as_text=True))
    assert backfills.list_backfills(schedules, schedule_id)[0]["fires"] == {"fired": 1}
    unknown = operator.post(f"/schedules/{schedule_id}/backfills/nope/cancel")
    assert unknown.status_code == 404 and "backfill &#39;nope&#39; does not exist" in unknown.get_data(as_text=True)

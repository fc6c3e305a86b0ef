"""The dashboard's pages and fragments with Flask's test client, on the real PostgreSQL.

No coordinator runs here: a run just started is ``running`` with its first task ``pending``; tests
finish tasks through the store as the coordinator would (``finish_task``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.dashboard.conftest import (
    HOSTILE,
    PASSWORD,
    SECRET_VALUE,
    LoggedIn,
    create_user,
    csrf_of,
    hostile_text_is_inert,
    log_in,
    unique,
)

pytestmark = pytest.mark.integration


def finish_task(app: Flask, task_id: str, status: str, output: Any = None) -> None:
    """Apply a worker result to a task through the store, as the coordinator does."""
    from engine.core.contracts import Failure, ResultMessage
    from engine.store.models import Task

    with app.extensions["flow"].db.connect() as conn:
        attempt, token = conn.execute(sa.select(Task.attempt, Task.fencing_token).where(Task.id == task_id)).one()
    error = Failure("invalid_input", f"refused {HOSTILE}", retryable=False) if status == "failed" else None
    app.extensions["flow"].store.apply_results([ResultMessage(task_id, attempt, token, status, output=output, error=error)])


def pending_task_ids(app: Flask, run_id: str) -> list[str]:
    from engine.store.dashboard import run_tasks

    return [t["id"] for t in run_tasks(app.extensions["flow"].db, run_id) if t["status"] == "pending"]


def failed_run(user: LoggedIn, who: str = "ada") -> str:
    name = user.deploy_echo()
    run_id = user.store.start_run(name, {"who": who})
    finish_task(user.app, pending_task_ids(user.app, run_id)[0], "failed")
    assert user.store.get_run(run_id)["status"] == "failed"
    return run_id


PAGES = ["/", "/workflows", "/runs", "/dead-letters", "/schedules"]


# -- login ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES + ["/runs/nope", "/workflows/nope"])
def test_every_page_needs_a_login(app: Flask, path: str) -> None:
    client = app.test_client()
    response = client.get(path)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login")
    # htmx is told to load the login page instead of swapping it into a fragment
    response = client.get(path, headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")


def test_mutations_need_a_login_too(app: Flask) -> None:
    response = app.test_client().post("/runs/x/cancel", data={})
    assert response.status_code == 303 and response.headers["Location"].startswith("/login")


def test_login_with_the_right_password_then_log_out(app: Flask) -> None:
    username = create_user(app, "viewer")
    client = app.test_client()
    page = client.get("/login?next=/runs")
    assert page.status_code == 200 and 'name="password"' in page.get_data(as_text=True)
    token = csrf_of(page.get_data(as_text=True))
    wrong = client.post("/login", data={"username": username, "password": "nope", "csrf_token": token, "next": "/runs"})
    assert wrong.status_code == 401 and "Wrong username or password" in wrong.get_data(as_text=True)
    right = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token, "next": "/runs"})
    assert right.status_code == 303 and right.headers["Location"] == "/runs"
    page = client.get("/runs")
    assert page.status_code == 200 and username in page.get_data(as_text=True)
    # a new session was made at login: the token of the login form is no longer the session's
    new_token = csrf_of(page.get_data(as_text=True))
    assert new_token != token
    assert client.post("/logout", data={"csrf_token": new_token}).status_code == 303
    assert client.get("/runs").status_code == 303


def test_login_refuses_a_missing_csrf_token_and_an_outside_next(app: Flask) -> None:
    username = create_user(app)
    client = app.test_client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    assert client.post("/login", data={"username": username, "password": PASSWORD}).status_code == 400
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token,
                                            "next": "//evil.example/steal"})
    assert response.status_code == 303 and response.headers["Location"] == "/"


# -- pages and fragments ---------------------------------------------------------------------------


def test_every_page_and_its_fragment(operator: LoggedIn) -> None:
    name = operator.deploy_echo()
    run_id = operator.store.start_run(name, {"who": "ada"})
    paths = PAGES + [f"/workflows/{name}", f"/workflows/{name}?version=1", f"/runs/{run_id}",
                     f"/runs?workflow={name}&status=running"]
    for path in paths:
        page = operator.get(path)
        assert page.status_code == 200, (path, page.get_data(as_text=True)[:500])
        html = page.get_data(as_text=True)
        assert html.startswith("<!doctype html>") and "</html>" in html
        assert "HX-Request" in page.headers["Vary"]
        csp = page.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "<style" not in html and " style=" not in html, path
        fragment = operator.get(path, htmx=True)
        assert fragment.status_code == 200, path
        assert "<html" not in fragment.get_data(as_text=True)
        assert "HX-Request" in fragment.headers["Vary"]


def test_static_htmx_is_served_with_the_csp(operator: LoggedIn) -> None:
    response = operator.client.get("/static/htmx.min.js")
    assert response.status_code == 200 and b"htmx" in response.data[:200]
    assert "Content-Security-Policy" in response.headers
    layout = operator.get("/").get_data(as_text=True)
    assert '"includeIndicatorStyles":false' in layout and "hx-headers=" in layout


def test_overview_shows_counts_queues_chart_and_latest_failures(operator: LoggedIn) -> None:
    run_id = failed_run(operator)
    html = operator.get("/").get_data(as_text=True)
    assert 'class="chart"' in html and "Last hour" in html
    for task_type in ("http_request", "data_processing", "compensation"):
        assert task_type in html
    assert f"/runs/{run_id}" in html  # the latest failure links to its run
    assert 'hx-trigger="every 5s"' in html
    hostile_text_is_inert(html)


def test_workflow_page_has_source_graph_versions_and_form(operator: LoggedIn) -> None:
    name = operator.deploy_echo()
    html = operator.get(f"/workflows/{name}").get_data(as_text=True)
    assert '<span class="t-kw">workflow</span>' in html  # highlighted on the server
    assert 'class="flow-graph"' in html and 'data-step="echo"' in html
    for field in ("who", "times", "tags", "loud"):
        assert f'name="{field}"' in html
    assert "version 1" in html


def test_diagnostics_of_the_check_are_shown_at_their_line(operator: LoggedIn) -> None:
    name = unique("warned")
    # a POST without an idempotency key that is retried: the compiler warns (W503)
    source = f"""flow 1
workflow {name}() {{
  step call: http {{
    method: "POST"
    url: "https://example.com/x"
    retry {{ attempts: 3 }}
    compensate none "test"
  }}
}}
"""
    operator.store.deploy(source, "warned.flow")
    html = operator.get(f"/workflows/{name}").get_data(as_text=True)
    assert 'class="line-warning"' in html and "diag diag-warning" in html


def test_start_run_form_validates_next_to_the_fields(operator: LoggedIn) -> None:
    name = operator.deploy_echo()
    bad = operator.post(f"/workflows/{name}/runs", {"who": "", "times": "two", "tags": "[1", "loud": "true"})
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert "<html" not in html  # the form fragment, swapped in place
    assert re.search(r'id="err-times">enter a whole number', html)
    assert re.search(r'id="err-tags">not valid JSON', html)
    assert 'value="two"' in html  # what was typed is kept
    wrong_type = operator.post(f"/workflows/{name}/runs", {"who": "x", "times": "1", "tags": "[1, 2]"})
    assert wrong_type.status_code == 422 and 'id="err-tags">expected string' in wrong_type.get_data(as_text=True)

    good = operator.post(f"/workflows/{name}/runs", {"who": "ada", "times": "3", "tags": '["a"]', "loud": "false"})
    assert good.status_code == 200 and good.headers["HX-Redirect"].startswith("/runs/")
    run_id = good.headers["HX-Redirect"].rsplit("/", 1)[1]
    assert operator.store.get_run(run_id)["params"] == {"who": "ada", "times": 3, "tags": ["a"], "loud": False}
    # without JavaScript: a plain form post and a 303 to the run
    plain = operator.post(f"/workflows/{name}/runs", {"who": "bob", "times": ""}, htmx=False)
    assert plain.status_code == 303 and plain.headers["Location"].startswith("/runs/")


def test_runs_list_filters_paginates_and_polls_while_live(operator: LoggedIn) -> None:
    name = operator.deploy_echo()
    run_ids = [operator.store.start_run(name, {"who": f"n{i}"}) for i in range(27)]
    page = operator.get(f"/runs?workflow={name}").get_data(as_text=True)
    assert page.count('href="/runs/') == 25
    assert 'hx-trigger="every 2s"' in page  # running runs: the table polls itself
    older = re.search(r'href="(/runs\?[^"]*cursor=[^"]+)"', page)
    assert older, "no link to the older page"
    second = operator.get(older.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert second.count('href="/runs/') == 2 and run_ids[0] in second

    for run_id in run_ids:
        operator.store.cancel_run(run_id)
    done = operator.get(f"/runs?workflow={name}&status=cancelled", htmx=True).get_data(as_text=True)
    assert done.count('href="/runs/') == 25 and "every 2s" not in done  # nothing live: no polling
    assert operator.get(f"/runs?workflow={name}&status=running").get_data(as_text=True).count('href="/runs/') == 0
    assert "is not one of" in operator.get("/runs?status=bogus").get_data(as_text=True)
    assert "is not a time" in operator.get("/runs?since=yesterday").get_data(as_text=True)
    assert "not a cursor" in operator.get("/runs?cursor=zzz").get_data(as_text=True)
    assert operator.get("/runs?since=2000-01-01T00:00&until=2000-01-02T00:00").status_code == 200


def test_run_page_colours_the_dag_and_polls_until_finished(operator: LoggedIn) -> None:
    name = operator.deploy_echo()
    run_id = operator.store.start_run(name, {"who": "ada"})
    live = operator.get(f"/runs/{run_id}").get_data(as_text=True)
    assert 'hx-trigger="every 1s"' in live
    assert re.search(r'class="node status-pending" data-step="echo"', live)
    assert 'class="timeline"' in live
    finish_task(operator.app, pending_task_ids(operator.app, run_id)[0], "completed", {"echo": "Hello ada"})
    finish_task(operator.app, pending_task_ids(operator.app, run_id)[0], "completed", [2])
    done = operator.get(f"/runs/{run_id}", htmx=True).get_data(as_text=True)
    assert "every 1s" not in done
    assert re.search(r'class="node status-completed" data-step="count"', done)
    assert "Hello ada" in done


def test_csrf_is_refused_without_the_token_and_accepted_with_it(operator: LoggedIn) -> None:
    name = operator.deploy_echo()
    run_id = operator.store.start_run(name, {"who": "ada"})
    assert operator.post(f"/runs/{run_id}/cancel", token=False).status_code == 400
    assert operator.post(f"/runs/{run_id}/cancel", token=False, htmx=False).status_code == 400
    wrong = operator.client.post(f"/runs/{run_id}/cancel", headers={"X-CSRF-Token": "forged", "HX-Request": "true"})
    assert wrong.status_code == 400
    assert operator.store.get_run(run_id)["status"] == "running"
    # GET never mutates
    assert operator.client.get(f"/runs/{run_id}/cancel").status_code == 405
    assert operator.store.get_run(run_id)["status"] == "running"

    ok = operator.post(f"/runs/{run_id}/cancel")
    assert ok.status_code == 200 and "The run is cancelled." in ok.get_data(as_text=True)
    assert operator.store.get_run(run_id)["status"] == "cancelled"
    # the same action again: refused, the reason shown in place (409)
    again = operator.post(f"/runs/{run_id}/cancel")
    assert again.status_code == 409 and "Not done" in again.get_data(as_text=True)


def test_a_viewer_reads_but_cannot_act(app: Flask) -> None:
    viewer = LoggedIn(app, "viewer")
    name = viewer.deploy_echo()
    run_id = viewer.store.start_run(name, {"who": "ada"})
    html = viewer.get(f"/runs/{run_id}").get_data(as_text=True)
    assert "/cancel" not in html
    assert viewer.post(f"/runs/{run_id}/cancel").status_code == 403
    assert viewer.store.get_run(run_id)["status"] == "running"


def test_retry_a_failed_run_and_task_and_compensate(operator: LoggedIn) -> None:
    run_id = failed_run(operator)
    page = operator.get(f"/runs/{run_id}").get_data(as_text=True)
    assert f"/runs/{run_id}/retry" in page and "hx-confirm=" in page
    retried = operator.post(f"/runs/{run_id}/retry")
    assert retried.status_code == 200 and "Retrying the run" in retried.get_data(as_text=True)
    assert operator.store.get_run(run_id)["status"] == "running"

    run_id = failed_run(operator)
    from engine.store.dashboard import run_tasks

    task_id = next(t["id"] for t in run_tasks(operator.app.extensions["flow"].db, run_id) if t["status"] == "failed")
    redirected = operator.post(f"/runs/{run_id}/tasks/{task_id}/retry", htmx=False)
    assert redirected.status_code == 303
    assert "Retrying task" in operator.get(redirected.headers["Location"]).get_data(as_text=True)  # flashed
    assert operator.post(f"/runs/{run_id}/tasks/not-a-task/retry").status_code == 404

    run_id = failed_run(operator)
    compensated = operator.post(f"/runs/{run_id}/compensate")
    assert compensated.status_code == 200, compensated.get_data(as_text=True)
    assert operator.store.get_run(run_id)["status"] in ("compensating", "compensated")


def test_unknown_things_are_404_pages(operator: LoggedIn) -> None:
    for path in ("/runs/nope", "/workflows/nope", "/dead-letters/nope"):
        response = operator.get(path)
        assert response.status_code == 404 and "Not found" in response.get_data(as_text=True)
    assert operator.get("/workflows/x?version=abc").status_code == 400
    assert operator.post("/schedules/nope/pause").status_code == 404


def test_hostile_names_payloads_outputs_and_logs_are_escaped_and_inert(operator: LoggedIn) -> None:
    name = operator.deploy_echo()
    run_id = operator.store.start_run(name, {"who": HOSTILE, "tags": [HOSTILE]})
    task_id = pending_task_ids(operator.app, run_id)[0]
    from datetime import UTC, datetime

    from engine.store.models import TaskLog

    with operator.app.extensions["flow"].db.begin() as conn:
        conn.execute(sa.insert(TaskLog).values(task_id=task_id, run_id=run_id, attempt=1, level="info",
                                               message=f"log {HOSTILE}", data={"x": HOSTILE}, created_at=datetime.now(UTC)))
    finish_task(operator.app, task_id, "failed")
    for path, least in ((f"/runs/{run_id}", 3), ("/", 1), (f"/runs?workflow={name}", 1), ("/dead-letters", 0)):
        html = operator.get(path).get_data(as_text=True)
        assert hostile_text_is_inert(html) >= least, path
    # what was typed into the start form comes back escaped too
    bad = operator.post(f"/workflows/{name}/runs", {"who": HOSTILE, "times": HOSTILE})
    assert "&lt;script&gt;" in bad.get_data(as_text=True)
    hostile_text_is_inert(bad.get_data(as_text=True))


def test_secrets_are_masked(operator: LoggedIn) -> None:
    name = operator.deploy_echo()
    run_id = operator.store.start_run(name, {"who": f"token {SECRET_VALUE}"})
    html = operator.get(f"/runs/{run_id}").get_data(as_text=True)
    assert SECRET_VALUE not in html and "token ***" in html


def test_dead_letters_inspect_requeue_discard(operator: LoggedIn) -> None:
    letters = []
    for _ in range(2):
        task_id = operator.store.create_task("http_request", {"url": HOSTILE}, max_attempts=1)
        finish_task(operator.app, task_id, "failed")
        letters.append(next(d for d in operator.store.list_dead_letters() if d["task_id"] == task_id)["id"])
    listing = operator.get("/dead-letters").get_data(as_text=True)
    assert all(f"/dead-letters/{letter}" in listing for letter in letters)
    page = operator.get(f"/dead-letters/{letters[0]}").get_data(as_text=True)
    hostile_text_is_inert(page)
    assert "/requeue" in page and "/discard" in page
    requeued = operator.post(f"/dead-letters/{letters[0]}/requeue")
    assert requeued.status_code == 200 and "Requeued" in requeued.get_data(as_text=True)
    assert operator.post(f"/dead-letters/{letters[0]}/requeue").status_code == 409
    discarded = operator.post(f"/dead-letters/{letters[1]}/discard", htmx=False)
    assert discarded.status_code == 303
    assert operator.store.get_dead_letter(letters[1])["discarded_at"] is not None
    assert letters[1] not in operator.get("/dead-letters").get_data(as_text=True)
    assert letters[1] in operator.get("/dead-letters?closed=1").get_data(as_text=True)


def test_schedules_show_next_fires_and_pause_resume(operator: LoggedIn) -> None:
    schedules = operator.app.extensions["flow"].schedules
    schedule_id = schedules.create_recurring_task("data_processing", {"operation": "noop"}, "*/5 * * * *", "UTC")
    html = operator.get("/schedules").get_data(as_text=True)
    assert f"/schedules/{schedule_id}/pause" in html and "*/5 * * * *" in html
    paused = operator.post(f"/schedules/{schedule_id}/pause")
    assert paused.status_code == 200 and "Paused" in paused.get_data(as_text=True)
    assert f"/schedules/{schedule_id}/resume" in paused.get_data(as_text=True)
    assert schedules.get(schedule_id).enabled is False
    resumed = operator.post(f"/schedules/{schedule_id}/resume", htmx=False)
    assert resumed.status_code == 303 and schedules.get(schedule_id).enabled is True


def test_an_every_schedule_shows_its_duration_as_written(operator: LoggedIn) -> None:
    from dsl.spec import Schedule

    operator.app.extensions["flow"].schedules.sync_workflow("ticker", 1, [Schedule("every", every=5400.0)])
    html = operator.get("/schedules").get_data(as_text=True)
    assert "<code>every 1h30m</code>" in html and "5400.0</code>" not in html


def test_approve_and_reject_a_waiting_approval_step(operator: LoggedIn) -> None:
    # Given a run waiting on an approval step
    name = unique("approve")
    operator.store.deploy(
        f'workflow {name}() {{ step gate: approval {{ prompt: "ship it?" }} step after_gate: noop {{ output: steps.gate.output }} }}',
        f"{name}.flow",
    )
    from engine.store.dashboard import run_tasks

    def waiting_gate(run_id: str) -> str:
        tasks = run_tasks(operator.app.extensions["flow"].db, run_id)
        return next(t["id"] for t in tasks if t["step"] == "gate" and t["status"] == "processing")

    approved_run = operator.store.start_run(name, {})
    gate = waiting_gate(approved_run)
    page = operator.get(f"/runs/{approved_run}").get_data(as_text=True)
    assert f"/runs/{approved_run}/tasks/{gate}/approve" in page and 'value="reject"' in page

    # When the operator approves one run and rejects another
    answered = operator.post(f"/runs/{approved_run}/tasks/{gate}/approve", {"decision": "approve", "comment": "ok"})
    rejected_run = operator.store.start_run(name, {})
    operator.post(f"/runs/{rejected_run}/tasks/{waiting_gate(rejected_run)}/approve", {"decision": "reject"})

    # Then each step completes with the answer, and a second answer is refused
    assert answered.status_code == 200 and "Approved step gate" in answered.get_data(as_text=True)
    gate_step = next(s for s in operator.store.get_run(approved_run)["steps"] if s["name"] == "gate")
    assert gate_step["output"] == {"approved": True, "by": operator.username, "comment": "ok"}
    gate_step = next(s for s in operator.store.get_run(rejected_run)["steps"] if s["name"] == "gate")
    assert gate_step["output"]["approved"] is False
    again = operator.post(f"/runs/{approved_run}/tasks/{gate}/approve", {"decision": "approve"})
    assert again.status_code == 409

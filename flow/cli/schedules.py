"""``flow scheduler`` and ``flow schedules list|pause|resume|delete``: thin adapters over the engine.

``flow/cli/main.py`` registers them with one line: ``schedules.register(main)``.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

import click

from engine.settings import Settings
from flow.cli.common import make_db_engine, schema_ready, settings_from_env, wait_for_database

if TYPE_CHECKING:  # sqlalchemy loads only for the commands that use it, not for `flow check`
    from datetime import datetime

    from sqlalchemy import Engine

log = logging.getLogger("flow.cli")


def register(group: click.Group) -> None:
    """Add the scheduler commands to the ``flow`` group."""
    group.add_command(scheduler)
    group.add_command(schedules_group)



def _engine(settings: Settings) -> "Engine":
    """The configured database; the embedded one is migrated on the fly, others must be current."""
    from engine.store import db

    engine = db.make_engine(settings.database_url)
    if settings.embedded:
        db.upgrade(engine)
    elif not db.is_up_to_date(engine):
        raise click.ClickException("the database is not at the newest schema; run `flow db upgrade` first")
    return engine


def _schedule_store(settings: Settings, launcher: Any = None) -> Any:
    from engine.store.schedules import ScheduleStore

    return ScheduleStore(_engine(settings), launcher, catchup_window=settings.catchup_window_seconds)


@click.command("scheduler")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1),
              help="The most fires per pass. Larger passes catch up faster after an outage but hold "
                   "a database connection longer.")
def scheduler(limit: int) -> None:
    """Run the scheduler: start the runs and tasks of due schedules, until SIGTERM or Ctrl-C.

    Several schedulers can run at once (each fire time fires once); fires missed while none ran
    are made up within FLOW_CATCHUP_WINDOW_SECONDS (default 3600) and recorded missed beyond.
    """
    from engine.runtime.scheduler import Scheduler
    from engine.store import Store
    from engine.store.schedule_deploys import StoreLauncher
    from engine.store.schedules import ScheduleStore

    settings = settings_from_env()
    if not logging.getLogger().handlers:
        from engine.observability.logs import setup_logging
        from engine.observability.metrics import start_metrics_server

        setup_logging(settings)
        start_metrics_server(settings, "scheduler")
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s; stopping after the current pass", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    # A database that is not up yet (a restart, compose ordering) is waited for, with a log line.
    engine = make_db_engine(settings)
    if wait_for_database(settings, lambda: schema_ready(settings, engine), role="scheduler",
                         stop=stop) is None:
        return  # stopped while waiting
    store = Store(engine, lease_seconds=settings.lease_seconds)
    schedules = ScheduleStore(engine, StoreLauncher(store), catchup_window=settings.catchup_window_seconds)
    Scheduler(schedules, settings, limit=limit).run(stop)


@click.group("schedules")
def schedules_group() -> None:
    """List, pause, resume, delete and backfill schedules (from .flow files and the scheduler API)."""


@schedules_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the schedules as a JSON list.")
def list_schedules(as_json: bool) -> None:
    """Every schedule with its next fire times (UTC), soonest first."""
    infos = _schedule_store(settings_from_env()).list_schedules()
    if as_json:
        click.echo(json.dumps([i.to_json() for i in infos], indent=2))
        return
    if not infos:
        click.echo("no schedules")
        return
    for info in infos:
        target = info.workflow_name or f"task {info.task['type'] if info.task else '?'}"
        status = "active" if info.enabled else "paused"
        upcoming = ", ".join(t.strftime("%Y-%m-%d %H:%M:%S") for t in info.upcoming) or "-"
        click.echo(f"{info.id}  {status:6}  {target}  {info.timing} {info.timezone}"
                   f"  next (UTC): {upcoming}")


def _control(action: str, schedule_id: str) -> None:
    from engine.store.schedule_values import ScheduleNotFound

    store = _schedule_store(settings_from_env())
    actions = {"pause": store.pause, "resume": store.resume, "delete": store.delete}
    try:
        actions[action](schedule_id)
    except ScheduleNotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"schedule {schedule_id}: {action}d")


@schedules_group.command("pause")
@click.argument("schedule_id", metavar="ID")
def pause(schedule_id: str) -> None:
    """Stop firing schedule ID; fires that fall while paused are skipped, not made up."""
    _control("pause", schedule_id)


@schedules_group.command("resume")
@click.argument("schedule_id", metavar="ID")
def resume(schedule_id: str) -> None:
    """Fire schedule ID again, from now on."""
    _control("resume", schedule_id)


@schedules_group.command("delete")
@click.argument("schedule_id", metavar="ID")
def delete(schedule_id: str) -> None:
    """Delete schedule ID and its fire history (a .flow schedule returns on its next changed deploy)."""
    _control("delete", schedule_id)


@schedules_group.command("backfill")
@click.argument("schedule_id", metavar="ID")
@click.option("--from", "start", required=True, metavar="TIME",
              help="First instant of the range, included: ISO 8601 such as 2026-11-01 or "
                   "2026-11-01T00:00:00+01:00 (no offset: UTC).")
@click.option("--to", "end", required=True, metavar="TIME",
              help="End of the range, excluded; not after now (the scheduler fires from now on).")
@click.option("--max-parallel", type=click.IntRange(min=1), default=None, metavar="N",
              help="At most N of the backfill's runs in flight; the scheduler (`flow scheduler` or "
                   "`flow up`) starts the rest as earlier ones finish. Default: all at once.")
@click.option("--dry-run", is_flag=True, help="List the fire times and which of them would run; start nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def backfill(schedule_id: str, start: str, end: str, max_parallel: int | None, dry_run: bool, as_json: bool) -> None:
    """Run schedule ID once for each of its fire times in [--from, --to).

    Each run gets its fire time as `workflow.scheduled_at` and shows as a backfill in run lists.
    A fire time that already fired (by the scheduler or an earlier backfill) is not run again, so
    repeating a backfill, or one over an overlapping range, starts only what is missing.
    """
    from engine.core.timing import ScheduleError
    from engine.store import backfill as backfills
    from engine.store.schedule_deploys import StoreLauncher
    from engine.store.schedule_values import ScheduleNotFound
    from engine.store import Store

    settings = settings_from_env()
    engine = _engine(settings)
    schedules = _schedule_store(settings, StoreLauncher(Store(engine, lease_seconds=settings.lease_seconds)))
    try:
        result = backfills.backfill(schedules, schedule_id, _time(start, "--from"), _time(end, "--to"),
                                    max_parallel=max_parallel, dry_run=dry_run)
    except (ScheduleNotFound, ScheduleError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    click.echo(_backfill_summary(result))


def _time(text: str, option: str) -> "datetime":
    """An ISO 8601 time; without an offset it is UTC (as the API reads it)."""
    from datetime import datetime, timezone

    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time like 2026-11-01T03:00:00Z", param_hint=option) from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _backfill_summary(result: Any) -> str:
    new, already = len(result.new), len(result.already)
    lines = [f"{len(result.fire_times)} fire time{'s' if len(result.fire_times) != 1 else ''} in "
             f"[{result.range_start.isoformat()}, {result.range_end.isoformat()}): "
             f"{new} to run, {already} already recorded (not run again)"]
    if result.dry_run:
        lines += [f"  would run {t.isoformat()}" for t in result.new]
        lines.append("dry run: nothing started")
        return "\n".join(lines)
    for fire in result.started:
        if fire["error"]:
            what = f"failed: {fire['error']}"
        else:
            what = f"run {fire['run_id']}" if fire["run_id"] else f"task {fire['task_id']}"
        lines.append(f"  {fire['fire_time']}  {what}")
    if result.backfill_id:
        lines.append(f"backfill {result.backfill_id}: {len(result.started)} started, {result.queued} queued"
                     + (f" (at most {result.max_parallel} at once; the scheduler starts the rest)" if result.queued else ""))
    else:
        lines.append("nothing to start: every fire time of the range has fired already")
    return "\n".join(lines)


@schedules_group.command("backfills")
@click.argument("schedule_id", metavar="ID")
@click.option("--cancel", "cancel", default=None, metavar="BACKFILL",
              help="Cancel backfill BACKFILL of schedule ID: its queued fires never start (runs it "
                   "started go on); their fire times may be backfilled again.")
@click.option("--json", "as_json", is_flag=True, help="Print the backfills as JSON.")
def list_backfills(schedule_id: str, cancel: str | None, as_json: bool) -> None:
    """The newest backfills of schedule ID, with their fires counted by status (fired, queued, failed)."""
    from engine.store import backfill as backfills
    from engine.store.schedule_values import ScheduleNotFound

    schedules = _schedule_store(settings_from_env())
    try:
        schedules.get(schedule_id)
        if cancel is not None:
            dropped = backfills.cancel_backfill(schedules, schedule_id, cancel)
            click.echo(f"backfill {cancel}: cancelled, {dropped} queued fire{'s' if dropped != 1 else ''} dropped")
            return
    except (ScheduleNotFound, backfills.BackfillNotFound) as exc:
        raise click.ClickException(str(exc)) from None
    rows = backfills.list_backfills(schedules, schedule_id)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no backfills")
        return
    for row in rows:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(row["fires"].items())) or "no fires"
        limit = f"  max {row['max_parallel']} at once" if row["max_parallel"] else ""
        click.echo(f"{row['id']}  [{row['from']}, {row['to']})  {counts}{limit}  created {row['created_at']}")

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
    """List, pause, resume and delete schedules (from .flow files and the scheduler API)."""


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
    try:
        getattr(store, action)(schedule_id)
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

"""Operations commands of ``flow``: ``prune`` (retention).

``flow/cli/main.py`` registers them with one line: ``ops.register(main)``.
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import click

from engine.settings import Settings, SettingsError


def register(group: click.Group) -> None:
    """Add the operations commands to the ``flow`` group."""
    group.add_command(prune)


@click.command("prune")
@click.option("--older-than", "older_than", default=None, metavar="AGE",
              help="Delete finished work older than AGE: 30d, 12h, 2w (a bare number is days). "
                   "Default: FLOW_RETENTION_DAYS.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Rows picked per transaction. Smaller batches hold row locks for less time; "
                   "larger ones finish sooner.")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as a JSON object.")
def prune(older_than: str | None, batch_size: int, dry_run: bool, as_json: bool) -> None:
    """Delete finished runs, their tasks and logs, finished standalone tasks, closed dead letters
    and schedule fires older than AGE, in small batches (safe while Flow runs).

    Runs that are not finished and their tasks are never touched. SIGTERM or Ctrl-C stops after the
    batch in progress; what was deleted stays deleted.
    """
    from engine.store import db
    from engine.store.prune import parse_age
    from engine.store.prune import prune as run_prune

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    if older_than is None:
        if not settings.retention_days:
            raise click.UsageError("give --older-than (e.g. 30d) or set FLOW_RETENTION_DAYS")
        older_than = f"{settings.retention_days}d"
    try:
        age = parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    if age.total_seconds() <= settings.catchup_window_seconds:
        # A schedule fire inside the catch-up window may still be attempted; its row is what keeps
        # it from firing twice.
        raise click.BadParameter(
            f"must be longer than the catch-up window (FLOW_CATCHUP_WINDOW_SECONDS="
            f"{settings.catchup_window_seconds:g})", param_hint="--older-than")
    engine = db.make_engine(settings.database_url)
    if not db.is_up_to_date(engine):
        raise click.ClickException("the database is not at the newest schema; run `flow db upgrade` first")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    result = run_prune(engine, age, batch_size=batch_size, dry_run=dry_run, should_stop=stop.is_set)
    if as_json:
        click.echo(json.dumps({"cutoff": result.cutoff.isoformat(), "dry_run": dry_run,
                               "deleted": result.deleted, "batches": result.batches}))
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"prune before {result.cutoff.isoformat(timespec='seconds')}: {verb} "
               + ", ".join(f"{n} {table}" for table, n in result.deleted.items())
               + ("" if dry_run else f" in {result.batches} batches")
               + (" (stopped early)" if stop.is_set() else ""))

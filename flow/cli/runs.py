"""``flow runs list``: find runs by workflow, status and business keys, newest first.

``flow/cli/main.py`` registers it with one line: ``runs.register(main)``.
"""

from __future__ import annotations

import json

import click


def register(group: click.Group) -> None:
    group.add_command(runs_group)


@click.group("runs")
def runs_group() -> None:
    """List runs and find them by their business keys (the workflow's `search` clause)."""


@runs_group.command("list")
@click.option("--workflow", default=None, help="Only this workflow's runs.")
@click.option("--status", default=None, help="Only runs in this status (running, failed, completed, ...).")
@click.option("--search", "terms", multiple=True, metavar="KEY=VALUE",
              help="A business key of the workflow's `search { ... }` clause, e.g. --search order=4711; "
                   "repeat it to combine keys (all must match). Values compare as text.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500), help="The most runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print {runs, next_cursor} as JSON.")
def list_runs(workflow: str | None, status: str | None, terms: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Runs, newest first: id, workflow, status, creation time, business keys.

    \b
    flow runs list --search order=4711            what happened to order 4711?
    flow runs list --search customer=acme --status failed
    """
    from engine.core.errors import InvalidParams
    from engine.core.search import parse_filters
    from flow.cli.common import open_store, settings_from_env

    pairs: dict[str, str] = {}
    for term in terms:
        key, equals, value = term.partition("=")
        if not equals:
            raise click.BadParameter(f"{term!r}: write KEY=VALUE, e.g. order=4711", param_hint="--search")
        pairs[key] = value
    search, problems = parse_filters(pairs)
    if problems:
        raise click.BadParameter("; ".join(problems), param_hint="--search")
    store = open_store(settings_from_env())
    try:
        page = store.list_runs(workflow=workflow, status=status, limit=limit, search=search)
    except InvalidParams as exc:
        raise click.ClickException("; ".join(exc.problems)) from None
    if as_json:
        click.echo(json.dumps(page, indent=2, default=str))
        return
    if not page["runs"]:
        click.echo("no runs match" if (workflow or status or search) else "no runs")
        return
    for run in page["runs"]:
        keys = " ".join(f"{k}={v}" for k, v in run["search"].items())
        backfill = f"  backfill {run['backfill_id'][:8]} ({run['scheduled_at']})" if run["backfill_id"] else ""
        click.echo(f"{run['id']}  {run['workflow']} v{run['version']}  {run['status']:<10}  {run['created_at']}"
                   f"{'  ' + keys if keys else ''}{backfill}")

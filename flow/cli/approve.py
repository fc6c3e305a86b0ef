"""``flow approve RUN STEP``: answer a waiting ``approval`` step from the command line.

``flow/cli/main.py`` registers it with one line: ``approve.register(main)``.
"""

from __future__ import annotations

import getpass
import json

import click


def register(group: click.Group) -> None:
    group.add_command(approve)


@click.command("approve")
@click.argument("run_id", metavar="RUN")
@click.argument("step")
@click.option("--reject", is_flag=True, help="Reject instead of approving (the step completes with approved: false).")
@click.option("--comment", default=None, help="A comment, kept in the step's output.")
@click.option("--item", type=click.IntRange(min=0), default=None,
              help="Answer one item of a fan-out approval (default: every waiting item).")
@click.option("--by", default=None, help="Who answers (default: the OS user name).")
@click.option("--json", "as_json", is_flag=True, help="Print the run document as JSON.")
def approve(run_id: str, step: str, reject: bool, comment: str | None, item: int | None,
            by: str | None, as_json: bool) -> None:
    """Approve (or --reject) the waiting approval STEP of run RUN.

    The step's output becomes {approved, by, comment}; the run goes on at once.
    """
    from engine.core.errors import IllegalTransition, NotFound
    from flow.cli.common import open_store, settings_from_env

    store = open_store(settings_from_env())
    who = by or _os_user()
    try:
        store.approve_step(run_id, step, not reject, who, comment, item=item)
    except (NotFound, IllegalTransition) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(store.get_run(run_id), indent=2, default=str))
    else:
        click.echo(f"{'rejected' if reject else 'approved'} {step} of run {run_id} (by {who})")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"

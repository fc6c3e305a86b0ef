"""``flow lsp``: the language server for editors, over stdio."""

from __future__ import annotations

import os
import sys

import click

from flow.cli import python_steps


def register(group: click.Group) -> None:
    group.add_command(lsp)


@click.command("lsp")
@click.option("--stdio", is_flag=True, help="Speak over standard input and output (the default and only transport; "
                                            "accepted because editors pass it).")
@python_steps.steps_option
@python_steps.import_option
def lsp(stdio: bool, steps_file: str | None, imports: tuple[str, ...]) -> None:
    """Run the Flow language server on stdin/stdout, for editors (docs/editors.md).

    It reports the same errors and warnings as `flow check` as you type, and answers hover,
    go-to-definition, completion and the document outline. Plugin step types are those
    installed, plus --steps and --import, as for `flow check`.
    """
    from flow.lsp.server import make_server  # pygls loads only for this command

    server = make_server(python_steps.known_step_types(imports, steps_file))
    server.start_io()
    # pygls reads stdin in a pool thread, which may be blocked on the next read when `exit` comes:
    # a normal exit would join that thread, i.e. wait until the editor closes the pipe (it may wait
    # for us first). Nothing is left to do, so leave without joining it.
    sys.stderr.flush()
    os._exit(server.exit_code)

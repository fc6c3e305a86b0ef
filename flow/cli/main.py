"""The `flow` command line: a plain click group; each command is a thin adapter over dsl/engine.

Add a command with ``@main.command()`` in this module (or ``main.add_command(...)`` from another).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

import dsl
from flow.cli import approve, auth, ops, processes, python_steps, run, schedules, serve, start, worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Flow: workflows written in the .flow language, compiled to DAGs and run by the engine.

    \b
    Check and draw workflows:
      flow check workflows/*.flow       report errors and warnings
      flow graph order.flow --format svg > order.svg
    """


def _compile(path: str, step_types: Any = None) -> dsl.CompileResult:
    try:
        return dsl.compile_file(path, step_types)
    except OSError as exc:
        raise click.UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the diagnostics as a JSON list instead of text.")
@python_steps.steps_option
@python_steps.import_option
def check(files: tuple[str, ...], as_json: bool, steps_file: str | None, imports: tuple[str, ...]) -> None:
    """Compile FILES and report every error and warning.

    Exit status: 0 without errors (warnings allowed), 1 with errors, 2 when a file cannot be read.
    """
    step_types = python_steps.known_step_types(imports, steps_file)
    results = [_compile(path, step_types) for path in files]
    if as_json:
        click.echo(json.dumps([d.to_json() for r in results for d in r.diagnostics], indent=2))
    else:
        for path, result in zip(files, results):
            if result.diagnostics:
                click.echo(result.render(), err=False)
        errors = sum(len(r.errors) for r in results)
        warnings = sum(len(r.diagnostics) for r in results) - errors
        summary = f"{len(files)} file{'s' if len(files) != 1 else ''} checked: {errors} error{'s' if errors != 1 else ''}, " \
                  f"{warnings} warning{'s' if warnings != 1 else ''}"
        click.echo(summary, err=True)
    sys.exit(1 if any(not r.ok for r in results) else 0)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--workflow", "-w", "name", help="Which workflow of FILE to draw (default: the only or first one).")
@click.option("--format", "fmt", type=click.Choice(["svg", "dot", "mermaid"]), default="svg", show_default=True,
              help="svg for browsers, dot for Graphviz, mermaid for Markdown.")
def graph(file: str, name: str | None, fmt: str) -> None:
    """Draw the step graph of a workflow of FILE."""
    result = _compile(file)
    if not result.ok:
        click.echo(result.render(), err=True)
        sys.exit(1)
    if not result.specs:
        raise click.UsageError(f"{file} declares no workflow")
    try:
        spec = result.spec(name) if name else result.specs[0]
    except KeyError:
        names = ", ".join(s.name for s in result.specs)
        raise click.UsageError(f"{file} has no workflow {name!r}; it has: {names}") from None
    from dsl import graph as graph_module  # written separately; imported only when drawing

    click.echo(graph_module.render(spec, fmt))


# The groups of verbs, each in its own module; none of them imports this one.
for _module in (run, start, processes, schedules, auth, ops, approve, serve, worker):
    _module.register(main)
main.add_command(python_steps.steps)


if __name__ == "__main__":  # pragma: no cover
    main()

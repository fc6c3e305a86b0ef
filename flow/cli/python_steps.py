"""Python step types on the command line: import the user's modules (``--import``,
``FLOW_WORKER_IMPORTS``), read a manifest (``--steps``), and ``flow steps export``.

Importing user code happens only in the processes that run it (``flow worker``, ``flow up``) or on
the developer's request (``--import`` on ``check``, ``deploy`` and ``steps export``); the compiler
and the server only ever see the manifest, the JSON of the step types' config schemas.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from flow.steps import StepType, declared_in, manifest

IMPORTS_ENV = "FLOW_WORKER_IMPORTS"

import_option = click.option(
    "--import", "imports", multiple=True, metavar="MODULE",
    help="A module that declares step types with @flow.step_type (repeatable; also FLOW_WORKER_IMPORTS, "
         "comma-separated). The current directory is importable.",
)
steps_option = click.option(
    "--steps", "steps_file", type=click.Path(dir_okay=False), metavar="FILE",
    help="A manifest of Python step types (written by `flow steps export`) to check their config "
         "against, without importing their code.",
)


def module_names(given: Sequence[str], environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """``--import`` values then ``FLOW_WORKER_IMPORTS`` (commas or spaces), each once, in order."""
    names: list[str] = []
    for chunk in [*given, environ.get(IMPORTS_ENV, "")]:
        for name in chunk.replace(",", " ").split():
            if name not in names:
                names.append(name)
    return names


def import_step_types(names: Iterable[str]) -> list[StepType]:
    """Import each module and collect the step types it declares.

    Raises:
        click.ClickException: a module that cannot be imported (named, with the reason and the
            place, not a traceback), that declares no step type, or two step types on one queue.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # `flow worker --import myapp.steps` from the project's directory
    found: list[StepType] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # the user's module may raise anything while it is imported
            raise click.ClickException(_import_failure(name, exc)) from None
        declared = declared_in(module)
        if not declared:
            raise click.ClickException(
                f"module {name!r} declares no step type: decorate a function with @flow.step_type(\"ns.name\")")
        found.extend(declared)
    try:
        manifest(found)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    queues: dict[str, StepType] = {}
    for step in found:
        other = queues.setdefault(step.task_type, step)
        if other.name != step.name:
            raise click.ClickException(f"step types {other.name} and {step.name} share the queue {step.task_type!r}; "
                                       "give each its own task_type")
    return list({s.name: s for s in found}.values())


def _import_failure(name: str, exc: BaseException) -> str:
    """``cannot import module 'x': ModuleNotFoundError: No module named 'x'`` plus where it happened."""
    text = f"cannot import module {name!r}: {type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{text}\n  at {exc.filename}:{exc.lineno}"
    frames = [f for f in _frames(exc) if not f.filename.startswith("<frozen")]
    missing_itself = isinstance(exc, ModuleNotFoundError) and exc.name is not None and \
        (name == exc.name or name.startswith(exc.name + "."))
    if frames and not missing_itself:
        last = frames[-1]
        text += f"\n  at {last.filename}:{last.lineno}"
    return text + f"\n  (from --import or {IMPORTS_ENV}; is the module on the path, with its dependencies installed?)"


def _frames(exc: BaseException) -> list[Any]:
    import traceback

    return list(traceback.extract_tb(exc.__traceback__))


def known_step_types(imports: Sequence[str], steps_file: str | None) -> dict[str, Any] | None:
    """The step types the compiler checks dotted steps against: the installed plugins', plus a
    manifest file's and the imported modules'; None when neither is given (the installed ones)."""
    extra: dict[str, Any] = {}
    if steps_file:
        extra.update(read_manifest(steps_file))
    names = module_names(imports, environ={})
    if names:
        extra.update(manifest(import_step_types(names)))
    if not extra:
        return None
    from dsl.plugins import INSTALLED

    return {**dict(INSTALLED), **extra}


def read_manifest(path: str) -> dict[str, Any]:
    """The step types of a manifest file.

    Raises:
        click.ClickException: a file that cannot be read or is not a manifest.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the step types manifest {path}: {exc}") from None
    step_types = data.get("step_types", data) if isinstance(data, dict) else None
    if not isinstance(step_types, dict) or not all(isinstance(v, dict) for v in step_types.values()):
        raise click.ClickException(f"{path} is not a step types manifest: expected "
                                   '{"step_types": {"ns.name": {"task_type", "config_schema"}}}')
    return step_types


@click.group("steps")
def steps() -> None:
    """Python step types: list them, export their config schemas for the compiler."""


@steps.command("export")
@import_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout.")
def export(imports: tuple[str, ...], output: str | None) -> None:
    """Write the manifest of the step types the modules declare: the config schema of each, which
    `flow check --steps`, `flow deploy --steps` and the server's compiler read (they never import
    your code). Commit it beside your workflows and re-export when a step type's config changes."""
    names = module_names(imports)
    if not names:
        raise click.UsageError("name a module: flow steps export --import myapp.steps")
    document = {"step_types": manifest(import_step_types(names))}
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"{len(document['step_types'])} step types written to {output}", err=True)
    else:
        click.echo(text, nl=False)

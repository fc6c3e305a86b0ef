"""``flow test [PATHS]``: run the `.flowtest` files of workflows, with mocked steps and a virtual clock.

``flow/cli/main.py`` registers it with one line: ``flowtest.register(main)``.
"""

from __future__ import annotations

import json
import sys

import click


def register(group: click.Group) -> None:
    group.add_command(test)


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("-k", "keyword", metavar="TEXT", help="Run only the tests whose name contains TEXT.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per test instead of text.")
@click.option("-q", "--quiet", is_flag=True, help="Print only failures and the summary.")
def test(paths: tuple[str, ...], keyword: str | None, as_json: bool, quiet: bool) -> None:
    """Run the workflow tests of PATHS (.flowtest files, or directories searched for them;
    default: the current directory).

    Each test starts a run of its workflow on the real planner and store (an in-memory embedded
    database and broker); mocks answer for its steps, and a virtual clock skips every wait
    (sleeps, retry delays, approval timeouts), so nothing reaches the network and no test sleeps.
    The language of test files is described in docs/testing.md.

    Exit status: 0 when every test passed, 1 when one failed or a file does not compile.

    \b
    Examples:
      flow test                            every *.flowtest under the current directory
      flow test workflows/order_saga.flowtest -k rollback
    """
    from flow.testing.runner import Session, find_files, load

    files = find_files(paths or ["."])
    if not files:
        raise click.UsageError(f"no .flowtest files in {', '.join(paths or ('.',))}")
    session = Session()
    passed = failed = 0
    broken = False  # a file that does not compile fails the command even with no test in it
    try:
        for path in files:
            try:
                loaded = load(path)
            except OSError as exc:
                raise click.UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
            broken = broken or not loaded.ok
            if loaded.diagnostics and not as_json:
                click.echo(loaded.render(), err=True)
            names = [t.name for t in loaded.tests.tests if keyword is None or keyword in t.name]
            for outcome in session.run(loaded, names):
                passed += outcome.passed
                failed += not outcome.passed
                if as_json:
                    click.echo(json.dumps({"file": outcome.file, "line": outcome.line, "name": outcome.name,
                                           "passed": outcome.passed, "problems": list(outcome.problems),
                                           "virtual_seconds": outcome.virtual_seconds}))
                    continue
                if outcome.passed and quiet:
                    continue
                mark = click.style("PASS", fg="green") if outcome.passed else click.style("FAIL", fg="red")
                click.echo(f"{mark}  {outcome.file}:{outcome.line}  {outcome.name}"
                           + (f"  ({_duration(outcome.virtual_seconds)} virtual)" if outcome.virtual_seconds else ""))
                for problem in outcome.problems:
                    click.echo("      " + problem.replace("\n", "\n      "))
    finally:
        session.close()
    if not as_json:
        total = passed + failed
        click.echo(f"{total} test{'s' if total != 1 else ''}: {passed} passed, {failed} failed "
                   f"in {session.elapsed:.2f}s", err=True)
    sys.exit(1 if failed or broken else 0)


def _duration(seconds: float) -> str:
    """``2d3h``, ``1m30s``, ``0.5s``: the virtual time a run took, as the language writes durations."""
    if seconds < 60:
        return f"{seconds:g}s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    return "".join(parts)

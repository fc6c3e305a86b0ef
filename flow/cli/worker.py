"""``flow worker``: the click command that runs a worker process (registered by ``flow.cli.main``)."""

from __future__ import annotations

import click

from engine.settings import Settings, SettingsError
from flow.cli.python_steps import import_option, import_step_types, module_names

DEFAULT_QUEUES = "http_request,data_processing,compensation"


def register(group: click.Group) -> click.Command:
    """Register ``flow worker`` on ``group`` and return the command."""

    @group.command("worker")
    @click.option(
        "--queues",
        default=DEFAULT_QUEUES,
        show_default=True,
        help="Comma-separated task types to consume. Run separate workers per type to scale "
        "slow HTTP calls apart from CPU-bound data steps. The queues of the step types of --import "
        "are consumed too (--queues '' for those alone).",
    )
    @import_option
    @click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=8,
        show_default=True,
        help="Handler threads. HTTP steps mostly wait on the network, so more threads than CPUs "
        "is fine; data steps hold the GIL, so more threads do not make them faster.",
    )
    @click.option(
        "--grace-period",
        type=click.FloatRange(min=0),
        default=30.0,
        show_default=True,
        help="Seconds to let running tasks finish on SIGTERM/SIGINT before handing them back.",
    )
    def worker(queues: str, concurrency: int, grace_period: float, imports: tuple[str, ...]) -> None:
        """Consume step tasks from RabbitMQ (BROKER_URL) and run their handlers.

        \b
        Python step types: flow worker --import myapp.steps
        imports the module (from the current directory or the installed packages), registers the
        functions it declares with @flow.step_type and consumes their queues.
        """
        from workers import python_steps
        from workers.consumer import run_worker  # kombu loads only when a worker runs
        from workers.registry import Registry

        registry = Registry.with_builtins(load_plugins=True)
        step_types = import_step_types(module_names(imports))
        try:
            own = python_steps.register(registry, step_types)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        task_types = [q.strip() for q in queues.split(",") if q.strip()]
        task_types += [t for t in own if t not in task_types]
        if not task_types:
            raise click.BadParameter("name at least one task type", param_hint="--queues")
        known = registry.task_types()
        unknown = [t for t in task_types if t not in known]
        if unknown:
            raise click.BadParameter(
                f"no handler for {', '.join(unknown)}; known task types: {', '.join(known)}",
                param_hint="--queues",
            )
        try:
            settings = Settings.from_env()
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from None
        from engine.observability.logs import setup_logging
        from engine.observability.metrics import start_metrics_server

        setup_logging(settings)
        start_metrics_server(settings, "worker")
        for step in step_types:
            click.echo(f"flow worker: step type {step.name} -> {step.function.__module__}."
                       f"{step.function.__qualname__}{' (async)' if step.is_async else ''}", err=True)
        click.echo(f"flow worker: consuming {', '.join(task_types)} with {concurrency} threads", err=True)
        run_worker(settings, task_types, concurrency, grace_period=grace_period, registry=registry)

    return worker

"""``flow worker``: the click command that runs a worker process (registered by ``flow.cli.main``)."""

from __future__ import annotations

import click

from engine.settings import Settings, SettingsError

DEFAULT_QUEUES = "http_request,data_processing,compensation"


def register(group: click.Group) -> click.Command:
    """Register ``flow worker`` on ``group`` and return the command."""

    @group.command("worker")
    @click.option(
        "--queues",
        default=DEFAULT_QUEUES,
        show_default=True,
        help="Comma-separated task types to consume. Run separate workers per type to scale "
        "slow HTTP calls apart from CPU-bound data steps.",
    )
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
    def worker(queues: str, concurrency: int, grace_period: float) -> None:
        """Consume step tasks from RabbitMQ (BROKER_URL) and run their handlers."""
        from workers.consumer import run_worker  # kombu loads only when a worker runs
        from workers.registry import Registry

        task_types = [q.strip() for q in queues.split(",") if q.strip()]
        if not task_types:
            raise click.BadParameter("name at least one task type", param_hint="--queues")
        known = Registry.with_builtins(load_plugins=True).task_types()
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
        click.echo(f"flow worker: consuming {', '.join(task_types)} with {concurrency} threads", err=True)
        run_worker(settings, task_types, concurrency, grace_period=grace_period)

    return worker

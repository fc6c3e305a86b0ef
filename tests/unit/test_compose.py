"""``docker-compose.yml`` and the ``Dockerfile`` agree with the code.

The environment variables compose sets are ones the code reads (a typo there would silently fall
back to a default), every ``command:`` is a real ``flow`` command with real options, and the health
checks hit endpoints and ports that exist.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml  # noqa: E402  (a test dependency)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
FLOW_SERVICES = ("migrate", "web", "coordinator", "scheduler", "worker-1", "worker-2")
# Variables the images of the backing services read, not Flow.
IMAGE_VARS = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _env_names_read(path: Path) -> set[str]:
    """Every UPPER_CASE string literal of ``path``: the environment variables it reads."""
    tree = ast.parse(path.read_text())
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", node.value)}


def known_variables() -> set[str]:
    names = _env_names_read(ROOT / "engine" / "settings.py")
    names |= _env_names_read(ROOT / "web" / "__init__.py")  # FLOW_API_READ_AUTH and friends
    names |= {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"}  # engine/observability/tracing.py
    return names


def _resolve(value: Any) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def test_docker_compose_config_accepts_the_file() -> None:
    # `docker compose` (the plugin) or Debian's `docker-compose`; .ci/run installs the latter.
    args: list[str] | None = None
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60).returncode == 0:
        args = [docker, "compose", "-f", str(COMPOSE), "config", "-q"]
    elif shutil.which("docker-compose"):
        args = [str(shutil.which("docker-compose")), "-f", str(COMPOSE), "config", "-q"]
    if args is None and os.environ.get("CI"):
        pytest.fail(".ci/run installs docker-compose; it is missing")
    if args is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed (.ci/run installs docker-compose)")
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_services_are_all_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"postgres", "rabbitmq", *FLOW_SERVICES}
    assert "management" in services["rabbitmq"]["image"]
    assert set(compose["volumes"]) >= {"pgdata", "rabbitdata"}
    for name in FLOW_SERVICES:
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_every_variable_compose_sets_is_read_by_flow(compose: dict[str, Any]) -> None:
    known = known_variables()
    assert {"DATABASE_URL", "BROKER_URL", "FLOW_METRICS_PORT", "FLOW_RETENTION_DAYS"} <= known
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        unknown = {key for key in env if key not in known and key not in IMAGE_VARS}
        assert not unknown, f"{name} sets {sorted(unknown)}, which no Flow code reads"


def test_the_environment_builds_valid_settings(compose: dict[str, Any]) -> None:
    from engine.settings import Settings

    for name in FLOW_SERVICES:
        env = {k: _resolve(v) for k, v in compose["services"][name]["environment"].items()}
        settings = Settings.from_env(env)
        assert settings.database_url.startswith("postgresql+psycopg2://flow:")
        assert "@postgres:5432/" in settings.database_url
        assert settings.broker_url.startswith("amqp://") and "@rabbitmq:5672/" in settings.broker_url
        assert settings.log_format == "json"
        assert not settings.embedded
    scheduler = Settings.from_env({k: _resolve(v) for k, v in compose["services"]["scheduler"]["environment"].items()})
    assert scheduler.retention_days == 30


def _resolve_command(args: list[str]) -> click.Command:
    """The click command ``args`` names, with its options parsed (raises on an unknown one)."""
    from flow.cli.main import main

    command: click.Command = main
    rest = list(args)
    while isinstance(command, click.Group):
        name, rest = rest[0], rest[1:]
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, f"no command {name!r}"
        command = sub
    command.make_context(command.name or "", list(rest))  # parses the options; UsageError if bad
    return command


def test_every_command_is_a_flow_command(compose: dict[str, Any]) -> None:
    seen = {}
    for name in FLOW_SERVICES:
        command = compose["services"][name]["command"]
        assert command[0] == "flow", f"{name}: {command}"
        seen[name] = _resolve_command(command[1:]).name
    assert seen == {"migrate": "upgrade", "web": "serve", "coordinator": "coordinator",
                    "scheduler": "scheduler", "worker-1": "worker", "worker-2": "worker"}


def test_the_worker_queues_have_handlers(compose: dict[str, Any]) -> None:
    from workers.registry import Registry

    known = set(Registry.with_builtins(load_plugins=False).task_types())
    for name in ("worker-1", "worker-2"):
        command = compose["services"][name]["command"]
        queues = command[command.index("--queues") + 1].split(",")
        assert set(queues) <= known
        grace = float(command[command.index("--grace-period") + 1])
        # compose kills a container stop_grace_period after SIGTERM: it must outlast the worker's.
        assert float(compose["services"][name]["stop_grace_period"].rstrip("s")) > grace


def test_health_checks_hit_real_endpoints(compose: dict[str, Any]) -> None:
    from web import create_app

    services = compose["services"]
    for name in ("postgres", "rabbitmq", "web", "coordinator", "scheduler", "worker-1", "worker-2"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    web_check = " ".join(services["web"]["healthcheck"]["test"])
    path = re.search(r"127\.0\.0\.1:3030(/[\w/]+)", web_check).group(1)
    app = create_app({"TESTING": True}, settings=_embedded_settings())
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert path in rules and "/api/health" in rules and "/metrics" in rules
    for name in ("coordinator", "scheduler", "worker-1", "worker-2"):
        check = " ".join(services[name]["healthcheck"]["test"])
        port = services[name]["environment"]["FLOW_METRICS_PORT"]
        assert f":{port}/metrics" in check
        assert services[name]["environment"]["FLOW_METRICS_HOST"] == "0.0.0.0"


def _embedded_settings() -> Any:
    import tempfile

    from engine.settings import Settings

    return Settings.from_env({"FLOW_DATA_DIR": tempfile.mkdtemp()})


def test_dockerfile_is_multi_stage_and_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, re.MULTILINE)
    assert len(stages) == 2 and stages[0][1] == "build"
    assert "COPY --from=build" in text
    assert re.search(r"^USER flow$", text, re.MULTILINE)
    # Everything the package needs at run time is copied into the build stage.
    for package in ("dsl", "engine", "workers", "web"):
        assert f"COPY {package} {package}" in text

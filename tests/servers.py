"""Keep the test servers up (issue 16 §3): PostgreSQL and RabbitMQ on this machine.

The fault suite stops RabbitMQ (``rabbitmqctl stop_app``) and restarts PostgreSQL in its disruptive
scenarios; if one fails half-way, or is killed, a server can stay down and every later test fails
for that reason alone. ``SafetyNet`` (wired in ``tests/conftest.py``) notes which servers answered
when the session started; after each test that may stop a server (``tests/faults``, or any test
marked ``disrupts_servers``) and at the end of the session it checks those servers, starts the ones
that no longer answer, and waits until they do.

Standard library only: ``.ci/run`` also runs it as a script (``python3 tests/servers.py``) when it
exits, whatever happened before.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from urllib.parse import urlsplit

PG_ADMIN_URL = os.environ.get("FLOW_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_HOST = os.environ.get("FLOW_TEST_AMQP_HOST", "127.0.0.1:5672")
POSTGRES_ETC = "/etc/postgresql"
# Paths (relative to the repository) whose tests may stop or restart a server.
DISRUPTING_PATHS = ("tests/faults/",)

Run = Callable[[Sequence[str], float], int]  # (command, timeout) -> exit status (negative: did not run)


def run_command(command: Sequence[str], timeout: float) -> int:
    try:
        return subprocess.run(list(command), capture_output=True, timeout=timeout).returncode
    except (OSError, subprocess.SubprocessError):
        return -1


class ServerDown(RuntimeError):
    """A server that answered at the start of the session could not be brought back."""


@dataclass
class Attempt:
    """Commands run one after the other (failures included: e.g. ``start_app`` on a stopped node),
    then up to ``patience`` seconds for the server to answer."""

    commands: list[list[str]]
    patience: float
    timeout: float = 150.0  # of each command


@dataclass
class Server:
    name: str
    answers: Callable[[], bool]
    attempts: Callable[[], list[Attempt]]  # tried in order until the server answers


def _host_port(hostport: str, default_port: int) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    return host or "127.0.0.1", int(port or default_port)


def _tcp_open(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def postgres(run: Run = run_command) -> Server:
    parts = urlsplit(PG_ADMIN_URL)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432

    def answers() -> bool:
        # 0 = accepting connections (1 = starting up or shutting down, 2 = no answer).
        return run(["pg_isready", "-q", "-h", host, "-p", str(port), "-t", "3"], 10) == 0

    def attempts() -> list[Attempt]:
        try:
            versions = sorted(os.listdir(POSTGRES_ETC))
        except OSError:
            versions = []
        return [Attempt([["pg_ctlcluster", "--skip-systemctl-redirect", v, "main", "start"] for v in versions],
                        patience=60.0)] if versions else []

    return Server("PostgreSQL", answers, attempts)


def rabbitmq(run: Run = run_command) -> Server:
    host, port = _host_port(AMQP_HOST, 5672)

    def answers() -> bool:
        # The node runs *and* its application (stop_app leaves the node up, the broker down).
        return run(["rabbitmq-diagnostics", "-q", "check_running"], 30) == 0 and _tcp_open(host, port)

    def attempts() -> list[Attempt]:
        return [
            Attempt([["rabbitmqctl", "-q", "start_app"]], patience=30.0, timeout=60.0),  # after stop_app
            Attempt([["rabbitmq-server", "-detached"], ["rabbitmqctl", "await_startup", "--timeout", "120"]],
                    patience=60.0),  # the node itself is down
        ]

    return Server("RabbitMQ", answers, attempts)


def ensure(server: Server, *, run: Run = run_command, sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic, log: Callable[[str], None] = print,
           grace: float = 3.0, poll: float = 0.5) -> bool:
    """Make ``server`` answer. Returns False if it answered already (within ``grace`` seconds: it may
    be finishing a restart of its own), True if it had to be started; raises ``ServerDown``."""

    def wait(seconds: float) -> bool:
        deadline = clock() + seconds
        while True:
            if server.answers():
                return True
            if clock() >= deadline:
                return False
            sleep(poll)

    if wait(grace):
        return False
    tried: list[str] = []
    for attempt in server.attempts():
        for command in attempt.commands:
            log(f"{server.name} does not answer: running {' '.join(command)}")
            status = run(command, attempt.timeout)
            tried.append(f"{' '.join(command)} (exit {status})")
        if wait(attempt.patience):
            log(f"{server.name} answers again")
            return True
    raise ServerDown(f"{server.name} does not answer and could not be started; tried: "
                     f"{'; '.join(tried) or 'nothing (no command to start it on this machine)'}")


def may_stop_servers(relative_path: str, markers: Sequence[str] = ()) -> bool:
    """Whether a test (its file relative to the repository, its marker names) may stop a server."""
    path = relative_path.replace(os.sep, "/")
    return "disrupts_servers" in markers or path.startswith(DISRUPTING_PATHS)


@dataclass
class SafetyNet:
    """Restores, after the tests that may stop one, the servers that answered at the start."""

    servers: list[Server]
    ensure: Callable[[Server], bool] = ensure
    watched: list[Server] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)

    def session_started(self) -> None:
        self.watched = [s for s in self.servers if s.answers()]

    def after_test(self, relative_path: str, markers: Sequence[str] = ()) -> list[str]:
        if not may_stop_servers(relative_path, markers):
            return []
        return self.check()

    def check(self) -> list[str]:
        """Names of the servers that had to be started; raises ``ServerDown`` (after trying all)."""
        started: list[str] = []
        errors: list[str] = []
        for server in self.watched:
            try:
                if self.ensure(server):
                    started.append(server.name)
            except ServerDown as exc:
                errors.append(str(exc))
        self.restarted += started
        if errors:
            raise ServerDown("; ".join(errors))
        return started


def default_net() -> SafetyNet:
    return SafetyNet([postgres(), rabbitmq()])


def main() -> int:
    """``python3 tests/servers.py``: start both servers if they do not answer (.ci/run on exit)."""
    net = default_net()
    net.watched = list(net.servers)
    try:
        started = net.check()
    except ServerDown as exc:
        print(f"tests/servers.py: {exc}", file=sys.stderr)
        return 1
    print(f"tests/servers.py: {', '.join(started) + ' started again' if started else 'both servers answer'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

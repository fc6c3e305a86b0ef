"""The servers' safety net (tests/servers.py, issue 16 §3), on fake servers: nothing here stops a
real one. A server that stopped answering is started with the right commands and waited for;
one that answers is left alone; one that was down at the start is never touched."""

from __future__ import annotations

from typing import Sequence

import pytest

from tests import servers
from tests.conftest import IN_CI


class FakeMachine:
    """Commands and a clock; ``up`` says which fake servers answer. A start command brings its
    server up (after ``boot`` polls) unless ``broken``."""

    def __init__(self, up: dict[str, bool], boot: int = 2, broken: set[str] = frozenset()) -> None:
        self.up = dict(up)
        self.boot = boot
        self.broken = set(broken)
        self.commands: list[list[str]] = []
        self.now = 0.0
        self._booting: dict[str, int] = {}

    def run(self, command: Sequence[str], timeout: float) -> int:
        self.commands.append(list(command))
        joined = " ".join(command)
        if joined.startswith("pg_ctlcluster") and "PostgreSQL" not in self.broken:
            self._booting["PostgreSQL"] = self.boot
            return 0
        if joined == "rabbitmqctl -q start_app":
            # Works only when the node runs with its application stopped ("app" state).
            if self.up.get("rabbit-node") and "RabbitMQ" not in self.broken:
                self._booting["RabbitMQ"] = self.boot
                return 0
            return 69
        if joined == "rabbitmq-server -detached" and "RabbitMQ" not in self.broken:
            self.up["rabbit-node"] = True
            self._booting["RabbitMQ"] = self.boot
            return 0
        return 1

    def answers(self, name: str) -> bool:
        if name in self._booting:
            self._booting[name] -= 1
            if self._booting[name] <= 0:
                del self._booting[name]
                self.up[name] = True
        return self.up.get(name, False)

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> float:
        return self.now

    def server(self, name: str, real: servers.Server) -> servers.Server:
        return servers.Server(name, lambda: self.answers(name), real.attempts)

    def ensure(self, server: servers.Server) -> bool:
        return servers.ensure(server, run=self.run, sleep=self.sleep, clock=self.clock, log=lambda _: None)


@pytest.fixture
def pg_versions(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    (tmp_path / "15").mkdir()
    monkeypatch.setattr(servers, "POSTGRES_ETC", str(tmp_path))


def test_a_stopped_postgres_is_started_and_waited_for(pg_versions: None) -> None:
    machine = FakeMachine({"PostgreSQL": False})
    assert machine.ensure(machine.server("PostgreSQL", servers.postgres())) is True
    assert machine.commands == [["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start"]]
    assert machine.up["PostgreSQL"]


def test_rabbitmq_after_stop_app_gets_start_app() -> None:
    machine = FakeMachine({"RabbitMQ": False, "rabbit-node": True})
    assert machine.ensure(machine.server("RabbitMQ", servers.rabbitmq())) is True
    assert machine.commands == [["rabbitmqctl", "-q", "start_app"]]


def test_a_stopped_rabbitmq_node_is_started_detached_and_awaited() -> None:
    machine = FakeMachine({"RabbitMQ": False, "rabbit-node": False})
    assert machine.ensure(machine.server("RabbitMQ", servers.rabbitmq())) is True
    assert machine.commands == [
        ["rabbitmqctl", "-q", "start_app"],
        ["rabbitmq-server", "-detached"],
        ["rabbitmqctl", "await_startup", "--timeout", "120"],
    ]


def test_a_server_that_answers_is_left_alone(pg_versions: None) -> None:
    machine = FakeMachine({"PostgreSQL": True, "RabbitMQ": True})
    assert machine.ensure(machine.server("PostgreSQL", servers.postgres())) is False
    assert machine.ensure(machine.server("RabbitMQ", servers.rabbitmq())) is False
    assert machine.commands == []


def test_a_server_finishing_its_own_restart_gets_a_grace_period(pg_versions: None) -> None:
    machine = FakeMachine({"PostgreSQL": False})
    machine._booting["PostgreSQL"] = 3  # answers on the third poll, 1 s in: within the 3 s grace
    assert machine.ensure(machine.server("PostgreSQL", servers.postgres())) is False
    assert machine.commands == []


def test_a_server_that_cannot_be_started_raises_with_what_was_tried(pg_versions: None) -> None:
    machine = FakeMachine({"PostgreSQL": False}, broken={"PostgreSQL"})
    with pytest.raises(servers.ServerDown, match=r"PostgreSQL .*pg_ctlcluster --skip-systemctl-redirect 15 main start \(exit 1\)"):
        machine.ensure(machine.server("PostgreSQL", servers.postgres()))
    assert machine.now >= 60, "it waited the attempt's patience before giving up"


def test_no_way_to_start_it_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(servers, "POSTGRES_ETC", str(tmp_path / "absent"))
    machine = FakeMachine({"PostgreSQL": False})
    with pytest.raises(servers.ServerDown, match="no command to start it"):
        machine.ensure(machine.server("PostgreSQL", servers.postgres()))


@pytest.mark.parametrize("path, markers, expected", [
    ("tests/faults/test_faults.py", (), True),
    ("tests/integration/test_store.py", (), False),
    ("tests/unit/test_retry.py", ("disrupts_servers",), True),
    ("tests/faultsy/test_x.py", (), False),
])
def test_which_tests_may_stop_servers(path: str, markers: tuple[str, ...], expected: bool) -> None:
    assert servers.may_stop_servers(path, markers) is expected


def test_the_net_restores_only_what_answered_at_the_start(pg_versions: None) -> None:
    machine = FakeMachine({"PostgreSQL": True, "RabbitMQ": False, "rabbit-node": False})
    net = servers.SafetyNet([machine.server("PostgreSQL", servers.postgres()),
                             machine.server("RabbitMQ", servers.rabbitmq())], ensure=machine.ensure)
    net.session_started()
    assert [s.name for s in net.watched] == ["PostgreSQL"]  # RabbitMQ was never up: not ours to start

    machine.up["PostgreSQL"] = False  # a test stopped it
    assert net.after_test("tests/integration/test_store.py") == []  # not a disrupting test: not checked
    assert machine.commands == []
    assert net.after_test("tests/faults/test_faults.py") == ["PostgreSQL"]
    assert machine.commands == [["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start"]]
    assert net.check() == [] and net.restarted == ["PostgreSQL"]


def test_the_net_tries_every_server_before_it_raises(pg_versions: None) -> None:
    machine = FakeMachine({"PostgreSQL": True, "RabbitMQ": True, "rabbit-node": True}, broken={"PostgreSQL"})
    net = servers.SafetyNet([machine.server("PostgreSQL", servers.postgres()),
                             machine.server("RabbitMQ", servers.rabbitmq())], ensure=machine.ensure)
    net.session_started()
    machine.up.update({"PostgreSQL": False, "RabbitMQ": False})  # both down; PostgreSQL cannot start
    with pytest.raises(servers.ServerDown, match="PostgreSQL"):
        net.check()
    assert machine.up["RabbitMQ"], "RabbitMQ was still started although PostgreSQL failed"


def test_the_real_probes_see_the_real_servers() -> None:
    """The probes against this machine's servers (reads only: pg_isready, check_running, a TCP connect)."""
    up = servers.postgres().answers() and servers.rabbitmq().answers()
    if not up and not IN_CI:
        pytest.skip("PostgreSQL and RabbitMQ are not running on this machine")
    assert up


def test_the_real_probes_see_a_server_that_is_not_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:1/postgres")
    monkeypatch.setattr(servers, "AMQP_HOST", "127.0.0.1:1")
    assert servers.postgres().answers() is False
    assert servers.rabbitmq().answers() is False


# -- the wiring in tests/conftest.py, driven by hand with fake items -------------------------------

class _Item:
    def __init__(self, path: str, markers: tuple[str, ...] = ()) -> None:
        from pathlib import Path
        from types import SimpleNamespace

        root = Path(__file__).resolve().parents[2]
        self.path = root / path
        self.nodeid = f"{path}::test_x"
        self._markers = [SimpleNamespace(name=m) for m in markers]
        self.lines: list[str] = []
        reporter = SimpleNamespace(write_line=lambda line, **_: self.lines.append(line))
        self.config = SimpleNamespace(rootpath=root, pluginmanager=SimpleNamespace(get_plugin=lambda _: reporter))

    def iter_markers(self):
        return iter(self._markers)


def _teardown(item: _Item) -> None:
    """tests/conftest.py's teardown wrapper around a teardown that does nothing."""
    from tests import conftest

    hook = conftest.pytest_runtest_teardown(item, None)
    next(hook)  # the part before the test's own teardown
    with pytest.raises(StopIteration):
        hook.send(None)


def test_conftest_restarts_a_server_after_a_fault_test(monkeypatch: pytest.MonkeyPatch, pg_versions: None) -> None:
    from tests import conftest

    machine = FakeMachine({"PostgreSQL": True})
    net = servers.SafetyNet([machine.server("PostgreSQL", servers.postgres())], ensure=machine.ensure)
    net.session_started()
    monkeypatch.setattr(conftest, "_NET", net)
    machine.up["PostgreSQL"] = False

    _teardown(_Item("tests/integration/test_store.py"))
    assert machine.commands == [], "a test that cannot stop servers does not pay for a check"

    item = _Item("tests/faults/test_faults.py")
    _teardown(item)
    assert machine.up["PostgreSQL"] and net.restarted == ["PostgreSQL"]
    assert any("PostgreSQL did not answer after the test; started again" in line for line in item.lines)


def test_conftest_reports_a_server_it_cannot_start_after_the_teardown(
        monkeypatch: pytest.MonkeyPatch, pg_versions: None) -> None:
    from types import SimpleNamespace

    from tests import conftest

    machine = FakeMachine({"PostgreSQL": True}, broken={"PostgreSQL"})
    net = servers.SafetyNet([machine.server("PostgreSQL", servers.postgres())], ensure=machine.ensure)
    net.session_started()
    monkeypatch.setattr(conftest, "_NET", net)
    machine.up["PostgreSQL"] = False

    hook = conftest.pytest_runtest_teardown(_Item("tests/faults/test_faults.py"), None)
    next(hook)  # no exception yet: the test's fixtures are still torn down
    with pytest.raises(servers.ServerDown, match="PostgreSQL"):
        hook.send(None)

    item = _Item("tests/unit/x.py")
    session = SimpleNamespace(config=item.config, exitstatus=0)
    conftest.pytest_sessionfinish(session, 0)
    assert session.exitstatus == pytest.ExitCode.TESTS_FAILED
    assert any("leaves a server down" in line for line in item.lines)

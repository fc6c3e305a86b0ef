"""`flow serve` on a port that is taken: one line naming the port, exit status 1, no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_port_in_use_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "RABBITMQ_", "FLOW_"))}
        env.pop("DATABASE_URL", None)
        env.pop("BROKER_URL", None)
        env.update(FLOW_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, "-c", "import sys; from flow.cli.main import main; sys.exit(main())",
                               "serve", "--port", str(port)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: port {port} is already in use on 127.0.0.1: stop what listens there, or pick "
                     f"another port with --port or PORT"]
    assert "Traceback" not in done.stderr

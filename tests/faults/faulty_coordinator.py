"""A coordinator process with a fault installed: ``python -m tests.faults.faulty_coordinator FAULT``.

The fault suite and tests/integration/test_crash.py start it instead of ``flow coordinator`` to
kill a coordinator at the worst moment; the production loop only offers the seam
(``Coordinator(after_commit=...)``). Configured from the environment like ``flow coordinator``.

Faults:
- ``exit_before_publish``: exit with status 70 right after a batch with a completed step committed
  (so the next steps' messages are in the outbox) and before they were published. A batch of
  redelivered duplicates that changed nothing does not count.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence

from engine.core.contracts import ResultMessage
from engine.runtime.coordinator import Coordinator
from engine.runtime.messaging import Broker
from engine.store.context import BatchOutcome
from flow.cli.common import BUILTIN_TASK_TYPES, open_store, settings_from_env, setup_logging

EXIT_STATUS = 70
log = logging.getLogger("flow.coordinator")


def exit_before_publish(outcome: BatchOutcome, results: Sequence[ResultMessage]) -> None:
    if outcome.runs_touched and any(r.status == "completed" for r in results):
        log.error("fault exit_before_publish: exiting after commit, before publishing")
        os._exit(EXIT_STATUS)


FAULTS = {"exit_before_publish": exit_before_publish}


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1 or argv[0] not in FAULTS:
        print(f"usage: python -m tests.faults.faulty_coordinator {{{','.join(FAULTS)}}}", file=sys.stderr)
        return 2
    settings = settings_from_env()
    setup_logging(settings)
    stop = threading.Event()
    store = open_store(settings, pre_ping=False)
    broker = Broker(settings)
    try:
        Coordinator(store, broker, settings, task_types=BUILTIN_TASK_TYPES, after_commit=FAULTS[argv[0]]).run(stop)
    finally:
        broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""All SQL of the engine, behind one facade: ``from engine.store import Store``.

One module per aggregate, in dependency order (lower modules never import higher ones; the
import-linter ``layers`` contract in ``pyproject.toml`` checks it):

- ``db`` engines and migrations, ``models`` the tables, ``context`` the transaction context and
  value types, ``task_rows`` the task-row helpers every writer shares;
- ``versions`` deployed workflow versions, ``outbox`` the transactional outbox;
- ``planning`` re-planning runs, ``internal_steps`` sleep/approval/subflow, ``runs`` starting and
  controlling runs, ``results`` applying workers' results, ``timers`` retries, leases, deadlines;
- ``auth``, ``schedules``, ``prune``, ``bulk_start``, ``compensate``;
- read models: ``documents`` (CLI and API), ``dashboard``, ``probes``.

Code outside this package uses the ``Store`` facade (and ``db`` to make engines); it never runs
SQL of its own. Nothing here imports Flask, kombu or the runtime processes.
"""

from engine.store.auth import UserInfo
from engine.store.context import BatchOutcome, DeployedVersion, OutboxMessage
from engine.store.facade import Store

__all__ = ["BatchOutcome", "DeployedVersion", "OutboxMessage", "Store", "UserInfo"]

"""The engine: the state of every run, and the processes that move it forward.

- ``engine.core``: the pure rules (states, planner, retry maths, params, timing, messages, errors).
- ``engine.store``: every SQL statement, behind the one ``Store`` facade.
- ``engine.runtime``: the long-running processes (coordinator, scheduler) and the kombu messaging.
- ``engine.observability``: metrics, tracing and process logging.
- ``engine.settings``: the one frozen settings object built from the environment.

The engine never imports Flask, ``web``, ``workers`` or ``flow`` (import-linter contracts in
``pyproject.toml``).
"""

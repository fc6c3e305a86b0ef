"""The pure parts of the engine: what a run may do next, decided without any I/O.

Belongs here: task and run states and their transitions, the planner (the DAG walk and what it
knows of each step), retry maths, params checking, schedule timing rules, the messages that cross
processes, and the engine's exceptions. Must not import SQLAlchemy, kombu, Flask or anything of
``engine.store``, ``engine.runtime`` or ``engine.observability``: every function here can be
tested with plain values.
"""

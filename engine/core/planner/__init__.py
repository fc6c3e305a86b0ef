"""The planner: given a workflow spec and a view of one run, the actions that come next (pure).

``view`` holds its inputs (a read-only view of a run) and outputs (actions); ``step_state`` what it
knows about each step and the expression environment; ``fanout`` the ``for each`` rules; ``walk``
the DAG walk itself; ``apply`` how the store's in-memory view changes by an action. No I/O here.
"""

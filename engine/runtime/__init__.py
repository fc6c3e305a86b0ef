"""The engine's long-running processes and their plumbing: the coordinator loop (results in, one
store transaction, outbox out, timers), the scheduler loop, and kombu messaging.

Belongs here: loops, connections, reconnects, signal handling. Decisions belong in ``engine.core``
and SQL in ``engine.store``; this package only moves messages and calls the store.
"""

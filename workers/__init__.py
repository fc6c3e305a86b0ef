"""The workers: consume task queues, run the handler of each task's type, publish the results.

``consumer`` owns the kombu connection and the thread pool; ``registry`` maps task types to
handlers; ``handler_api`` is what a handler is given and may raise; ``handlers/`` holds the
built-in handlers; ``ssrf`` guards HTTP steps. Workers reach the engine only through messages
(``engine.core.contracts``, ``engine.runtime.topology``) and ``engine.settings``: never the store,
the database or the web app.
"""

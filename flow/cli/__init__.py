"""The ``flow`` command: ``main`` holds the click group, one module per group of verbs.

This is the composition root: it may import ``dsl``, ``engine``, ``workers`` and ``web``; each
command is a thin adapter that parses options and calls them. Heavy imports stay inside the
commands so that ``flow check`` does not load Flask or kombu.
"""

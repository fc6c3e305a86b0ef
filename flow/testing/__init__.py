"""Workflow tests (`flow test`, and pytest through ``flow.testing.pytest_plugin``): `.flowtest`
files run on the real planner and store, with mocked steps and a virtual clock (docs/testing.md).

This package composes the engine, like ``flow.cli``; ``import flow`` (the client) never loads it.
"""

SUFFIX = ".flowtest"

"""One error tree: every exception class of the server's packages is a ``dsl.errors.FlowError``
(the client's ``flow.errors`` is its own tree: it imports none of them)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from dsl.errors import FlowError, SourceError
from engine.core.errors import EngineError

PACKAGES = ("dsl", "engine", "workers", "web")
# Control flow inside one module, never raised to a caller.
INTERNAL = {"dsl.lalr.NeedsLark"}
# Modules that need an optional extra or start something on import.
SKIP_MODULES = ("engine.store.migrations",)


def _exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if info.name.startswith(SKIP_MODULES):
                continue
            module = importlib.import_module(info.name)
            for _, value in inspect.getmembers(module, inspect.isclass):
                if issubclass(value, BaseException) and value.__module__ == module.__name__:
                    found.append(value)
    return found


def test_every_exception_of_the_server_packages_is_a_flow_error() -> None:
    classes = _exception_classes()
    assert len(classes) > 15  # the walk found them
    outside = sorted(f"{c.__module__}.{c.__qualname__}" for c in classes
                     if not issubclass(c, FlowError) and f"{c.__module__}.{c.__qualname__}" not in INTERNAL)
    assert outside == [], "put these under dsl.errors.FlowError (keep a built-in base beside it if callers rely on one)"


@pytest.mark.parametrize("error", [SourceError([]), EngineError("x")])
def test_the_language_and_the_engine_meet_at_the_root(error: Exception) -> None:
    assert isinstance(error, FlowError)

"""Plugin step types: what the compiler knows of a dotted step type such as `acme.email`.

A plugin declares a step type in the entry point group ``flow.step_types``; the entry point's name
is the step type, its object describes it, as a mapping or as attributes:

- ``task_type``: the worker queue that runs it (default: the step type itself);
- ``config_schema``: a JSON Schema of the step's config (an object schema); or, instead,
- ``keys`` (every config key) and ``required`` (the keys a step must give).

The handler that runs the task is registered apart, in the workers (``flow.handlers``). Reading an
entry point imports the plugin's module, never anything of Flow's engine, workers or web; it is
done once per process, and only when a source uses a dotted step type.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Iterable, Iterator, Mapping

ENTRY_POINT_GROUP = "flow.step_types"


@dataclass(frozen=True)
class PluginStepType:
    """A dotted step type and its config rules; ``keys`` ``None`` means any key is accepted."""

    name: str
    task_type: str
    keys: frozenset[str] | None = None
    required: frozenset[str] = frozenset()
    schema: Mapping[str, Any] | None = None
    problem: str | None = None  # why the plugin could not be read; its config is then not checked

    def check_values(self, values: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """``(key, message)`` for each constant config value that the schema rejects."""
        if not self.schema or not values:
            return
        from jsonschema.validators import validator_for  # only plugins with a schema pay for it

        cls = validator_for(self.schema)
        validator = cls(self.schema, format_checker=cls.FORMAT_CHECKER)
        for err in validator.iter_errors(dict(values)):
            path = list(err.absolute_path)
            if path and path[0] in values:  # `required` and unknown keys are reported apart
                yield str(path[0]), err.message


StepTypes = Mapping[str, PluginStepType]


def describe(name: str, obj: Any) -> PluginStepType:
    """The ``PluginStepType`` of an entry point's object (a mapping or an object with attributes)."""
    def field(key: str, default: Any = None) -> Any:
        if isinstance(obj, Mapping):
            return obj.get(key, default)
        return getattr(obj, key, default)

    task_type = field("task_type") or name
    schema = field("config_schema")
    keys, required = field("keys"), field("required") or ()
    if schema is not None:
        if not isinstance(schema, Mapping):
            return _broken(name, "its `config_schema` is not a JSON Schema object")
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            return _broken(name, f"its `config_schema` is not a valid JSON Schema: {exc.message}")
        props = schema.get("properties")
        extra = schema.get("additionalProperties", False)
        keys = frozenset(props) if isinstance(props, Mapping) and extra is False else None
        required = schema.get("required") or ()
    elif keys is not None:
        keys = frozenset(_strings(keys))
    if not isinstance(task_type, str):
        return _broken(name, "its `task_type` is not a string")
    return PluginStepType(name, task_type, keys, frozenset(_strings(required)), schema)


def _strings(values: Iterable[Any]) -> Iterator[str]:
    return (v for v in values if isinstance(v, str))


def _broken(name: str, problem: str) -> PluginStepType:
    return PluginStepType(name, name, problem=problem)


def load_step_types(group: str = ENTRY_POINT_GROUP) -> dict[str, PluginStepType]:
    """The dotted step types declared by the installed plugins; one that fails to load has ``problem`` set."""
    found: dict[str, PluginStepType] = {}
    for entry in entry_points(group=group):
        if "." not in entry.name:
            continue  # plugin step types are dotted, so that they never shadow a built-in one
        try:
            obj = entry.load()
        except Exception as exc:  # a plugin's import may raise anything; the compiler must not
            found[entry.name] = _broken(entry.name, f"its entry point `{entry.value}` failed to load ({type(exc).__name__})")
            continue
        found[entry.name] = describe(entry.name, obj)
    return found


class InstalledStepTypes(Mapping[str, PluginStepType]):
    """The installed plugins' step types, read from the entry points on first use, then kept."""

    def _all(self) -> dict[str, PluginStepType]:
        return _installed()

    def __getitem__(self, name: str) -> PluginStepType:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, PluginStepType]:
    return load_step_types()


INSTALLED = InstalledStepTypes()


def as_step_types(given: Mapping[str, Any] | None) -> StepTypes:
    """``given`` (step type -> description, for tests and embedders) normalised; ``None``: the installed ones."""
    if given is None:
        return INSTALLED
    return {name: obj if isinstance(obj, PluginStepType) else describe(name, obj) for name, obj in given.items()}

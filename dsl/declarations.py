"""Workflow parameters and schedules: their checks (E3xx) and lowering."""

from __future__ import annotations

import datetime
import zoneinfo

from croniter import croniter

from dsl import ast
from dsl.errors import Diagnostic, error
from dsl.lowering import NOT_CONSTANT, constant
from dsl.names import did_you_mean, names_in_constant
from dsl.spec import Param, Schedule
from dsl.types import SCALAR_TYPES, TYPE_NAMES, value_matches

_SCHEDULE_OPTIONS = ("timezone", "params", "catchup")


def compile_params(params: tuple[ast.Param, ...], diags: list[Diagnostic]) -> tuple[Param, ...]:
    result: list[Param] = []
    seen: set[str] = set()
    for p in params:
        if p.name in seen:
            diags.append(error("E209", f"parameter `{p.name}` is declared twice", p.loc))
            continue
        seen.add(p.name)
        type_ok = _check_type(p.type, diags)
        type_text = p.type.text()
        default, has_default = None, p.default is not None
        if p.default is not None:
            default = constant(p.default)
            if not names_in_constant(p.default, f"the default of `{p.name}`", diags):
                default = None
            elif default is NOT_CONSTANT:
                diags.append(error("E304", f"the default of `{p.name}` must be a constant", p.default.loc))
                default = None
            elif type_ok and not value_matches(default, type_text):
                diags.append(error("E304", f"default of `{p.name}` is not of type `{type_text}`: {_show(default)}", p.default.loc,
                                   *(("help: only a nullable type (`T?`) accepts `null`",) if default is None else ())))
        result.append(Param(p.name, type_text, default, has_default))
    return tuple(result)


def _check_type(t: ast.TypeRef, diags: list[Diagnostic]) -> bool:
    if t.name not in TYPE_NAMES:
        diags.append(error("E314", f"unknown type `{t.name}`", t.loc, *did_you_mean(t.name, TYPE_NAMES),
                           "note: types are string, int, float, bool, object, any, list<T>, and T? for nullable"))
        return False
    if t.name == "list":
        if t.arg is None:
            diags.append(error("E314", "`list` needs an element type, e.g. `list<object>`", t.loc))
            return False
        return _check_type(t.arg, diags)
    if t.arg is not None:
        diags.append(error("E314", f"`{t.name}` takes no element type", t.loc))
        return False
    return t.name in SCALAR_TYPES


def _show(value: object) -> str:
    import json

    if value is NOT_CONSTANT:
        return "(an expression, not a constant)"
    return json.dumps(value)[:40]


def compile_schedule(s: ast.Schedule, params: tuple[Param, ...], diags: list[Diagnostic]) -> Schedule | None:
    value = constant(s.value)  # a computed value is reported as a bad cron / duration / time (E308 E316 E318)
    before = len(diags)
    options = _options(s, diags)
    timezone = options.get("timezone", "UTC")
    kwargs: dict[str, object] = {}
    if s.kind == "cron":
        if not isinstance(value, str) or not croniter.is_valid(value):
            diags.append(error("E308", f"bad cron expression {_show(value)}", s.value.loc,
                               'help: five fields "minute hour day-of-month month day-of-week", e.g. "0 3 * * *"'))
        kwargs["cron"] = value
    elif s.kind == "every":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            diags.append(error("E316", "`schedule every` takes a positive duration such as `5m`", s.value.loc))
        kwargs["every"] = float(value) if isinstance(value, (int, float)) else None
    else:
        try:
            datetime.datetime.fromisoformat(value)  # a non-string raises TypeError: E318 too
        except (TypeError, ValueError):
            diags.append(error("E318", f"bad ISO-8601 time {_show(value)}", s.value.loc, 'help: e.g. "2026-12-01T09:00:00+01:00"'))
        kwargs["at"] = value
    run_params = options.get("params", {})
    _check_params(s, run_params, params, diags)
    if len(diags) > before or not isinstance(run_params, dict):
        return None
    return Schedule(kind=s.kind, timezone=str(timezone), params=run_params,
                    catchup=bool(options.get("catchup", True)), span=s.loc, **kwargs)  # type: ignore[arg-type]


def _options(s: ast.Schedule, diags: list[Diagnostic]) -> dict[str, object]:
    result: dict[str, object] = {}
    for entry in s.options.entries if s.options else ():
        value = constant(entry.value)
        if entry.key not in _SCHEDULE_OPTIONS:
            diags.append(error("E317", f"unknown schedule option `{entry.key}`", entry.loc, *did_you_mean(entry.key, _SCHEDULE_OPTIONS)))
        elif value is NOT_CONSTANT:
            diags.append(error("E319", f"schedule `{entry.key}` must be a constant", entry.value.loc,
                               "note: schedules fire without a run to take values from"))
        elif entry.key == "timezone":
            if not _valid_zone(value):
                diags.append(error("E309", f"unknown time zone {_show(value)}", entry.value.loc, 'help: an IANA name such as "Europe/Berlin"'))
            else:
                result["timezone"] = value
        elif entry.key == "params" and not isinstance(value, dict):
            diags.append(error("E317", "schedule `params` must be an object", entry.value.loc))
        elif entry.key == "catchup" and not isinstance(value, bool):
            diags.append(error("E317", "schedule `catchup` must be `true` or `false`", entry.value.loc))
        else:
            result[entry.key] = value
    return result


def _valid_zone(value: object) -> bool:
    if not isinstance(value, str) or not value or ".." in value or value.startswith("/"):
        return False
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _check_params(s: ast.Schedule, given: object, params: tuple[Param, ...], diags: list[Diagnostic]) -> None:
    if not isinstance(given, dict):
        return
    by_name = {p.name: p for p in params}
    where = next((e.value.loc for e in (s.options.entries if s.options else ()) if e.key == "params"), s.loc)
    missing = [p.name for p in params if p.required and p.name not in given]
    if missing:
        diags.append(error("E306", f"schedule does not give required parameter{'s' if len(missing) > 1 else ''} "
                           + ", ".join(f"`{m}`" for m in missing), where))
    for name, value in given.items():
        if name not in by_name:
            diags.append(error("E307", f"schedule gives unknown parameter `{name}`", where, *did_you_mean(name, by_name)))
        elif not value_matches(value, by_name[name].type):
            diags.append(error("E304", f"schedule parameter `{name}` is not of type `{by_name[name].type}`: {_show(value)}", where))

"""The abstract syntax tree of a .flow file: frozen dataclasses, each with its ``loc``.

The parser builds it (dsl/builder.py); the compiler checks and lowers it. Nodes hold no lark objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from dsl.spec import Span

Location = Span


# ---- expressions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    """``1``, ``2.5``, ``"text"`` (no interpolation), ``true``, ``null``."""

    value: Any
    loc: Location


@dataclass(frozen=True)
class Duration:
    """``1h30m``, kept apart from numbers so that `timeout` can insist on one."""

    seconds: float
    text: str
    loc: Location


@dataclass(frozen=True)
class Name:
    name: str
    loc: Location


@dataclass(frozen=True)
class Member:
    obj: Expr
    key: str
    loc: Location
    key_loc: Location


@dataclass(frozen=True)
class Index:
    obj: Expr
    index: Expr
    loc: Location


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple[Expr, ...]
    loc: Location
    fn_loc: Location


@dataclass(frozen=True)
class Unary:
    op: str  # "-" | "not"
    arg: Expr
    loc: Location


@dataclass(frozen=True)
class Binary:
    op: str  # + - * / % == != < <= > >= in ?? and or
    left: Expr
    right: Expr
    loc: Location


@dataclass(frozen=True)
class Cond:
    test: Expr
    then: Expr
    else_: Expr
    loc: Location


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Expr, ...]
    loc: Location


@dataclass(frozen=True)
class ObjectEntry:
    key: str
    value: Expr
    loc: Location  # of the key


@dataclass(frozen=True)
class ObjectExpr:
    entries: tuple[ObjectEntry, ...]
    loc: Location


@dataclass(frozen=True)
class Interp:
    """``"a ${e} b"``: text parts and expressions, in order."""

    parts: tuple[Union[str, Expr], ...]
    loc: Location


Expr = Union[Literal, Duration, Name, Member, Index, Call, Unary, Binary, Cond, ListExpr, ObjectExpr, Interp]


# ---- step entries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    key: str
    value: Expr
    loc: Location  # of the key


@dataclass(frozen=True)
class After:
    names: tuple[tuple[str, Location], ...]
    loc: Location


@dataclass(frozen=True)
class When:
    expr: Expr
    loc: Location


@dataclass(frozen=True)
class ForEach:
    var: str
    var_loc: Location
    items: Expr
    where: Expr | None
    concurrency: Expr | None
    loc: Location


@dataclass(frozen=True)
class RetryClause:
    value: Expr  # an int, an object, or the name of a `let` bound to an object
    loc: Location


@dataclass(frozen=True)
class TimeoutClause:
    value: Expr
    loc: Location


@dataclass(frozen=True)
class Compensate:
    type: str
    type_loc: Location
    entries: tuple[Entry, ...]
    loc: Location


@dataclass(frozen=True)
class CompensateNone:
    reason: str | None
    loc: Location


@dataclass(frozen=True)
class AllowFailure:
    loc: Location


@dataclass(frozen=True)
class Doc:
    text: str
    loc: Location


Entry = Union[Config, After, When, ForEach, RetryClause, TimeoutClause, Compensate, CompensateNone, AllowFailure, Doc]


# ---- declarations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    name_loc: Location
    type: str
    type_loc: Location
    entries: tuple[Entry, ...]
    loc: Location


@dataclass(frozen=True)
class TypeRef:
    name: str
    arg: TypeRef | None
    nullable: bool
    loc: Location

    def text(self) -> str:
        inner = f"<{self.arg.text()}>" if self.arg else ""
        return f"{self.name}{inner}{'?' if self.nullable else ''}"


@dataclass(frozen=True)
class Param:
    name: str
    type: TypeRef
    default: Expr | None
    loc: Location


@dataclass(frozen=True)
class Let:
    name: str
    expr: Expr
    loc: Location
    name_loc: Location


@dataclass(frozen=True)
class Schedule:
    kind: str  # cron | every | at
    value: Expr
    options: ObjectExpr | None
    loc: Location


@dataclass(frozen=True)
class Defaults:
    entries: tuple[Entry, ...]
    loc: Location


@dataclass(frozen=True)
class OnFailure:
    steps: tuple[Step, ...]
    loc: Location


@dataclass(frozen=True)
class Output:
    value: ObjectExpr
    loc: Location


@dataclass(frozen=True)
class Search:
    """``search { order: params.order_id }``: the business keys each run is indexed by."""

    keys: ObjectExpr
    loc: Location


@dataclass(frozen=True)
class WorkflowTimeout:
    value: Expr
    loc: Location


WorkflowItem = Union[Doc, WorkflowTimeout, Defaults, Let, Step, Schedule, OnFailure, Output, Search]


@dataclass(frozen=True)
class Workflow:
    name: str
    name_loc: Location
    params: tuple[Param, ...]
    items: tuple[WorkflowItem, ...]
    loc: Location

    def of_type(self, cls: type) -> list[Any]:
        return [item for item in self.items if isinstance(item, cls)]


@dataclass(frozen=True)
class File:
    filename: str
    version: int | None
    lets: tuple[Let, ...]
    workflows: tuple[Workflow, ...]

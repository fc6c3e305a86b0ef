"""The expression evaluator: JSON-value semantics, functions, deferral, limits and safety."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsl.evaluator import EvaluationError, call_lambda, describe, evaluate, is_deferred, resolve
from dsl.functions import FUNCTIONS
from dsl.values import MAX_STRING


# --- tree builders ------------------------------------------------------------------------------

def lit(v: Any) -> dict[str, Any]:
    return {"op": "lit", "value": v}


def name(n: str) -> dict[str, Any]:
    return {"op": "name", "name": n}


def get(obj: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        obj = {"op": "get", "obj": obj, "key": key}
    return obj


def idx(obj: dict[str, Any], i: dict[str, Any]) -> dict[str, Any]:
    return {"op": "index", "obj": obj, "index": i}


def call(fn: str, *args: Any) -> dict[str, Any]:
    return {"op": "call", "fn": fn, "args": [a if isinstance(a, dict) and "op" in a else lit(a) for a in args]}


def bin_(op: str, left: Any, right: Any) -> dict[str, Any]:
    wrap = lambda x: x if isinstance(x, dict) and "op" in x else lit(x)  # noqa: E731
    return {"op": "binary", "operator": op, "left": wrap(left), "right": wrap(right)}


def interp(*parts: Any) -> dict[str, Any]:
    return {"op": "interp", "parts": list(parts)}


ENV = {
    "params": {"order_id": "A-1", "items": [{"sku": "X", "qty": 2}, {"sku": "Y", "qty": 0}], "n": 5},
    "steps": {"validate": {"output": {"body": {"total": 1200.5}}, "status": "completed"}},
}


def ev(expr: dict[str, Any], env: dict[str, Any] | None = None) -> Any:
    return evaluate(expr, ENV if env is None else env)


# --- operators ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "op, left, right, expected",
    [
        ("+", 1, 2, 3),
        ("+", 1.5, 2, 3.5),
        ("+", "ab", "cd", "abcd"),
        ("+", [1], [2, 3], [1, 2, 3]),
        ("-", 5, 7, -2),
        ("*", 3, 2.5, 7.5),
        ("/", 7, 2, 3.5),
        ("/", 6, 2, 3),
        ("%", 7, 3, 1),
        ("==", 1, 1.0, True),
        ("==", True, 1, False),
        ("==", "1", 1, False),
        ("==", {"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]}, True),
        ("==", {"a": 1}, {"a": 1, "b": 2}, False),
        ("!=", [1, 2], [2, 1], True),
        ("==", None, None, True),
        ("<", 1, 2, True),
        (">=", "b", "a", True),
        ("<=", 2.0, 2, True),
        ("in", 2, [1, 2.0], True),
        ("in", {"a": 1}, [{"a": 1}], True),
        ("in", "ell", "hello", True),
        ("in", "k", {"k": 1}, True),
        ("in", "z", {"k": 1}, False),
        ("in", "x", None, False),
        ("??", None, 3, 3),
        ("??", 0, 3, 0),
        ("??", False, 3, False),
    ],
)
def test_binary_operators(op: str, left: Any, right: Any, expected: Any) -> None:
    result = ev(bin_(op, left, right))
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "op, left, right, message",
    [
        ("+", "total: ", 5, "cannot add string and number; use string(x) to convert"),
        ("+", {"a": 1}, {"b": 2}, "cannot add object and object"),
        ("+", None, 1, "cannot add null and number"),
        ("-", "a", 1, "'-' needs numbers, got string and number"),
        ("*", True, 2, "'*' needs numbers, got bool and number"),
        ("/", 1, 0, "division by zero"),
        ("/", 1.0, 0.0, "division by zero"),
        ("%", 1, 0, "modulo by zero"),
        ("<", 1, "2", "cannot compare number < string"),
        (">", None, 1, "cannot compare null > number"),
        ("<", [1], [2], "cannot compare list < list"),
        ("in", 1, "abc", "cannot look for a number in a string"),
        ("in", 1, {"a": 1}, "object keys are strings"),
        ("in", 1, 5, "'in' needs a list, string or object on its right, got number"),
        ("*", 1e308, 10, "number out of range"),
        ("*", 1 << 62, 4, "integer out of range"),
    ],
)
def test_binary_operator_errors(op: str, left: Any, right: Any, message: str) -> None:
    with pytest.raises(EvaluationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ev(bin_(op, left, right))


def test_coalesce_is_lazy() -> None:
    assert ev(bin_("??", 1, bin_("/", 1, 0))) == 1


@pytest.mark.parametrize(
    "expr, expected",
    [
        ({"op": "and", "left": lit(True), "right": lit(False)}, False),
        ({"op": "or", "left": lit(False), "right": lit(True)}, True),
        ({"op": "and", "left": lit(False), "right": bin_("/", 1, 0)}, False),
        ({"op": "or", "left": lit(True), "right": name("undefined")}, True),
        ({"op": "unary", "operator": "not", "arg": lit(False)}, True),
        ({"op": "unary", "operator": "-", "arg": lit(2.5)}, -2.5),
        ({"op": "cond", "test": lit(True), "then": lit("a"), "else": bin_("/", 1, 0)}, "a"),
        ({"op": "cond", "test": bin_(">", get(name("params"), "n"), 3), "then": lit(1), "else": lit(2)}, 1),
    ],
)
def test_logic_and_conditionals(expr: dict[str, Any], expected: Any) -> None:
    assert ev(expr) == expected


@pytest.mark.parametrize(
    "expr",
    [
        {"op": "and", "left": lit(1), "right": lit(True)},
        {"op": "or", "left": lit(False), "right": lit("yes")},
        {"op": "unary", "operator": "not", "arg": lit(None)},
        {"op": "cond", "test": lit("x"), "then": lit(1), "else": lit(2)},
    ],
)
def test_logic_needs_booleans(expr: dict[str, Any]) -> None:
    with pytest.raises(EvaluationError, match="needs true or false.*use bool"):
        ev(expr)


# --- access -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "expr, expected",
    [
        (get(name("params"), "order_id"), "A-1"),
        (get(name("steps"), "validate", "output", "body", "total"), 1200.5),
        (get(name("params"), "missing"), None),
        (get(name("params"), "missing", "deeper", "still"), None),
        (idx(get(name("params"), "items"), lit(0)), {"sku": "X", "qty": 2}),
        (idx(get(name("params"), "items"), lit(-1)), {"sku": "Y", "qty": 0}),
        (idx(get(name("params"), "items"), lit(7)), None),
        (idx(get(name("params"), "items"), lit(-3)), None),
        (idx(name("params"), lit("n")), 5),
        (idx(lit("abc"), lit(1)), "b"),
        (idx(lit(None), lit(1)), None),
        (get(idx(get(name("params"), "items"), lit(1)), "sku"), "Y"),
    ],
)
def test_member_and_index(expr: dict[str, Any], expected: Any) -> None:
    assert ev(expr) == expected


@pytest.mark.parametrize(
    "expr, message",
    [
        (name("nope"), "undefined name 'nope'"),
        (get(get(name("params"), "items"), "sku"), "cannot read field 'sku' of a list"),
        (get(lit("text"), "upper"), "cannot read field 'upper' of a string"),
        (idx(get(name("params"), "items"), lit("0")), "list index must be an integer, got string"),
        (idx(get(name("params"), "items"), lit(True)), "list index must be an integer, got bool"),
        (idx(name("params"), lit(0)), "object keys are strings"),
        (idx(lit(5), lit(0)), "cannot index a number"),
    ],
)
def test_access_errors(expr: dict[str, Any], message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        ev(expr)


# --- constructors -------------------------------------------------------------------------------

def test_list_object_and_interp() -> None:
    expr = {
        "op": "object",
        "entries": [
            ["id", get(name("params"), "order_id")],
            ["tags", {"op": "list", "items": [lit(1), lit("a")]}],
            ["text", interp("order ", get(name("params"), "order_id"), " n=", get(name("params"), "n"),
                            " ", lit(None), " ", lit(True), " ", lit(1.5), " ", lit({"a": [1]}))],
        ],
    }
    assert ev(expr) == {"id": "A-1", "tags": [1, "a"], "text": 'order A-1 n=5 null true 1.5 {"a":[1]}'}


# --- functions ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "fn, args, expected",
    [
        ("len", ["héllo"], 5),
        ("len", [[1, 2]], 2),
        ("len", [{"a": 1}], 1),
        ("len", [None], 0),
        ("merge", [{"a": 1, "b": 1}, {"b": 2}, None], {"a": 1, "b": 2}),
        ("keys", [{"b": 1, "a": 2}], ["b", "a"]),
        ("values", [{"b": 1, "a": 2}], [1, 2]),
        ("upper", ["abc"], "ABC"),
        ("lower", ["ÀB"], "àb"),
        ("trim", ["  x \n"], "x"),
        ("split", ["a,b,,c", ","], ["a", "b", "", "c"]),
        ("join", [["a", 1, None, True], "-"], "a-1-null-true"),
        ("join", [["a", "b"]], "ab"),
        ("contains", [[1, 2], 2], True),
        ("contains", ["abc", "d"], False),
        ("startswith", ["https://x", "https://"], True),
        ("endswith", ["file.json", ".csv"], False),
        ("replace", ["a-b-c", "-", "+"], "a+b+c"),
        ("round", [2.5], 3),
        ("round", [-2.5], -3),
        ("round", [2.675, 2], 2.68),
        ("round", [1234, -2], 1200),
        ("floor", [-1.5], -2),
        ("ceil", [1.2], 2),
        ("min", [[3, 1.5, 2]], 1.5),
        ("min", [3, 1], 1),
        ("max", [["b", "c", "a"]], "c"),
        ("max", [[]], None),
        ("sum", [[1, 2, 3.5]], 6.5),
        ("sum", [[]], 0),
        ("abs", [-3], 3),
        ("int", [2.9], 2),
        ("int", [-2.9], -2),
        ("int", [" 42 "], 42),
        ("int", [True], 1),
        ("float", ["2.5"], 2.5),
        ("float", [3], 3.0),
        ("string", [None], "null"),
        ("string", [False], "false"),
        ("string", [2.0], "2.0"),
        ("string", [{"a": [1, "x"]}], '{"a":[1,"x"]}'),
        ("string", ["as is"], "as is"),
        ("bool", [0], False),
        ("bool", [""], False),
        ("bool", [[]], False),
        ("bool", [{}], False),
        ("bool", [None], False),
        ("bool", ["0"], True),
        ("json", ["a"], '"a"'),
        ("json", [{"é": [1, None]}], '{"é":[1,null]}'),
    ],
)
def test_functions(fn: str, args: list[Any], expected: Any) -> None:
    result = ev(call(fn, *args))
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "fn, args, message",
    [
        ("len", [5], r"len\(\) expects a string, list or object, got number"),
        ("len", [], r"len\(\) takes 1 argument, got 0"),
        ("merge", [{"a": 1}, [1]], r"merge\(\) expects a object, got list"),
        ("upper", [1], r"upper\(\) expects a string, got number"),
        ("split", ["abc", ""], "non-empty separator"),
        ("replace", ["abc", "", "x"], "non-empty text"),
        ("round", [1.5, 1.5], "digits must be an integer"),
        ("min", [[1, "a"]], r"min\(\) compares numbers or strings, got number, string"),
        ("sum", [[1, "2"]], "got a string in the list"),
        ("int", ["2.5"], "cannot read '2.5' as an integer"),
        ("int", [None], "expects a number, string or bool, got null"),
        ("float", ["nan"], "cannot read 'nan'"),
        ("float", ["1e999"], "cannot read"),
        ("floor", [1e300], "integer out of range"),
        ("join", [["a"], 1], r"join\(\) expects a string"),
        ("keys", [[1]], r"keys\(\) expects a object"),
        ("contains", [1], r"contains\(\) takes 2 arguments, got 1"),
    ],
)
def test_function_errors(fn: str, args: list[Any], message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        ev(call(fn, *args))


def test_the_allow_list_is_exactly_the_reference() -> None:
    assert sorted(FUNCTIONS) == sorted(
        "len merge keys values upper lower trim split join contains startswith endswith replace "
        "round floor ceil min max sum abs int float string bool json".split()
    )


# --- security -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", ["eval", "exec", "__import__", "open", "getattr", "print", "__class__"])
def test_unknown_functions_are_errors(fn: str) -> None:
    with pytest.raises(EvaluationError, match=f"unknown function '{fn}'"):
        ev(call(fn, "os"))


@pytest.mark.parametrize("root", ["__import__", "__builtins__", "os", "self", "__class__"])
def test_unknown_roots_are_undefined(root: str) -> None:
    with pytest.raises(EvaluationError, match="undefined name"):
        ev(name(root))


@pytest.mark.parametrize("key", ["__class__", "__dict__", "__globals__", "keys", "values", "get", "upper"])
def test_python_attributes_are_missing_keys(key: str) -> None:
    assert ev(get(name("params"), key)) is None
    assert ev(get(name("params"), key, "__subclasses__")) is None
    assert ev(idx(name("params"), lit(key))) is None


def test_python_attributes_of_strings_and_lists_are_not_reachable() -> None:
    for obj in (lit("abc"), lit([1]), lit(1)):
        with pytest.raises(EvaluationError, match="cannot read field"):
            ev(get(obj, "__class__"))


@pytest.mark.parametrize(
    "expr, message",
    [
        ({"op": "exec", "code": "1"}, "unknown operation 'exec'"),
        ({"value": 1}, "expected a node with an 'op' field"),
        ("params", "expected a node with an 'op' field"),
        ({"op": "lit"}, "'lit' node needs a 'value'"),
        ({"op": "get", "obj": name("params"), "key": 1}, "needs a valid 'key'"),
        ({"op": "binary", "operator": "**", "left": lit(2), "right": lit(3)}, "unknown operator"),
        ({"op": "unary", "operator": "~", "arg": lit(2)}, "unknown unary operator"),
        ({"op": "object", "entries": [["a"]]}, "object entries are"),
        ({"op": "call", "fn": "len", "args": "x"}, "needs a valid 'args'"),
    ],
)
def test_malformed_trees(expr: Any, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        ev(expr)


def test_values_are_never_modified() -> None:
    env = json.loads(json.dumps(ENV))
    ev(call("merge", get(name("params")), {"x": 1}), env)
    ev(bin_("+", get(name("params"), "items"), lit([1])), env)
    assert env == ENV


# --- limits -------------------------------------------------------------------------------------

def test_deep_trees_are_rejected() -> None:
    expr: dict[str, Any] = lit(1)
    for _ in range(500):
        expr = bin_("+", expr, 1)
    with pytest.raises(EvaluationError, match="nested too deeply"):
        ev(expr)


def test_moderately_deep_trees_work() -> None:
    expr: dict[str, Any] = lit(0)
    for _ in range(150):
        expr = bin_("+", expr, 1)
    assert ev(expr) == 150


def test_deep_values_do_not_crash() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(EvaluationError):
        evaluate(call("json", name("v")), {"v": value})


@pytest.mark.parametrize(
    "expr",
    [
        call("replace", "a" * 1000, "a", "b" * 2000),
        call("join", ["x" * 600_000, "y" * 600_000]),
        bin_("+", "x" * 600_000, "y" * 600_000),
        interp("x" * 600_000, lit("y" * 600_000)),
        call("split", "," * 200_000, ","),
        call("string", lit(["x" * 1000] * 2000)),
    ],
)
def test_size_limits(expr: dict[str, Any]) -> None:
    with pytest.raises(EvaluationError, match="too long|too large|more than|limit"):
        ev(expr)


def test_string_at_the_limit_is_fine() -> None:
    assert len(ev(bin_("+", "x" * (MAX_STRING - 1), "y"))) == MAX_STRING


# --- deferral -----------------------------------------------------------------------------------

SECRET_HEADERS = {
    "op": "object",
    "entries": [
        ["Authorization", interp("Bearer ", get(name("secrets"), "TOKEN"))],
        ["X-Order", get(name("params"), "order_id")],
    ],
}


def test_deferred_secret_inside_an_object() -> None:
    value = evaluate(SECRET_HEADERS, ENV, defer=("secrets",))
    assert value["X-Order"] == "A-1"
    assert is_deferred(value["Authorization"])
    assert value["Authorization"]["$expr"] == interp("Bearer ", get(name("secrets"), "TOKEN"))
    assert describe(value["Authorization"]) == '"Bearer ${secrets.TOKEN}"'
    assert resolve(value, {"secrets": {"TOKEN": "t0k"}}) == {"Authorization": "Bearer t0k", "X-Order": "A-1"}


def test_deferred_interp_folds_known_parts_into_text() -> None:
    expr = interp("order ", get(name("params"), "order_id"), ": ", get(name("secrets"), "K"), "!")
    value = evaluate(expr, ENV, defer=("secrets",))
    assert value == {"$expr": interp("order A-1: ", get(name("secrets"), "K"), "!")}


def test_deferred_values_are_closed_over_other_names() -> None:
    expr = bin_("+", get(name("params"), "order_id"), get(name("secrets"), "SUFFIX"))
    value = evaluate(expr, ENV, defer=("secrets",))
    assert value == {"$expr": bin_("+", lit("A-1"), get(name("secrets"), "SUFFIX"))}
    assert resolve(value, {"secrets": {"SUFFIX": "-s"}}) == "A-1-s"


def test_deferred_lists_keep_their_shape() -> None:
    expr = {"op": "list", "items": [lit(1), get(name("secrets"), "A")]}
    value = evaluate(expr, {}, defer=("secrets",))
    assert value == [1, {"$expr": get(name("secrets"), "A")}]
    assert resolve(value, {"secrets": {"A": "a"}}) == [1, "a"]


def test_a_container_with_secrets_used_in_a_call_defers_the_call() -> None:
    expr = call("merge", {"op": "object", "entries": [["k", get(name("secrets"), "A")]]}, {"x": 1})
    value = evaluate(expr, {}, defer=("secrets",))
    assert is_deferred(value)
    assert describe(value) == 'merge({k: secrets.A}, {x: 1})'
    assert resolve(value, {"secrets": {"A": 2}}) == {"k": 2, "x": 1}


def test_lazy_branches_of_deferred_conditions_are_closed_not_evaluated() -> None:
    expr = {
        "op": "cond",
        "test": bin_("==", get(name("secrets"), "MODE"), "a"),
        "then": get(name("params"), "order_id"),
        "else": bin_("/", 1, 0),  # only an error if the worker takes this branch
    }
    value = evaluate(expr, ENV, defer=("secrets",))
    assert value["$expr"]["then"] == lit("A-1")
    assert resolve(value, {"secrets": {"MODE": "a"}}) == "A-1"
    with pytest.raises(EvaluationError, match="division by zero"):
        resolve(value, {"secrets": {"MODE": "b"}})


@pytest.mark.parametrize(
    "expr, secrets, expected",
    [
        (bin_("??", get(name("secrets"), "A"), get(name("params"), "n")), {}, 5),
        ({"op": "and", "left": get(name("secrets"), "F"), "right": lit(True)}, {"F": False}, False),
        ({"op": "or", "left": lit(False), "right": get(name("secrets"), "F")}, {"F": True}, True),
        ({"op": "unary", "operator": "-", "arg": get(name("secrets"), "N")}, {"N": 2}, -2),
        (idx(get(name("params"), "items"), get(name("secrets"), "I")), {"I": 1}, {"sku": "Y", "qty": 0}),
    ],
)
def test_deferred_round_trip(expr: dict[str, Any], secrets: dict[str, Any], expected: Any) -> None:
    value = evaluate(expr, ENV, defer=("secrets",))
    assert is_deferred(value)
    assert "params" not in json.dumps(value)  # closed: no free name but the deferred root
    assert resolve(json.loads(json.dumps(value)), {"secrets": secrets}) == expected


def test_without_defer_secrets_evaluate_normally() -> None:
    env = {**ENV, "secrets": {"TOKEN": "t"}}
    assert evaluate(SECRET_HEADERS, env)["Authorization"] == "Bearer t"


def test_resolve_leaves_plain_values_and_lambdas_alone() -> None:
    lam = evaluate({"op": "lambda", "param": "item", "body": get(name("item"), "a")}, {})
    value = {"a": [1, {"b": "c"}], "map": lam}
    assert resolve(value, {}) == value


# --- lambdas ------------------------------------------------------------------------------------

def test_lambda_closes_over_everything_but_its_param() -> None:
    expr = {
        "op": "lambda",
        "param": "item",
        "body": {"op": "object", "entries": [
            ["sku", get(name("item"), "sku")],
            ["order", get(name("params"), "order_id")],
            ["double", bin_("*", get(name("item"), "qty"), 2)],
        ]},
    }
    value = evaluate(expr, ENV)
    assert is_deferred(value)
    assert "params" not in json.dumps(value)
    assert describe(value) == '{sku: item.sku, order: "A-1", double: item.qty * 2}'
    assert call_lambda(value, {"sku": "X", "qty": 3}) == {"sku": "X", "order": "A-1", "double": 6}


def test_lambda_with_a_secret_is_called_with_the_worker_env() -> None:
    expr = {"op": "lambda", "param": "x", "body": bin_("+", name("x"), get(name("secrets"), "S"))}
    value = evaluate(expr, {}, defer=("secrets",))
    assert call_lambda(value, "a", env={"secrets": {"S": "b"}}) == "ab"


def test_call_lambda_rejects_non_lambdas() -> None:
    with pytest.raises(EvaluationError, match="expected a lambda"):
        call_lambda({"$expr": lit(1)}, 1)


# --- describe -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "expr, source",
    [
        (get(name("secrets"), "TOKEN"), "secrets.TOKEN"),
        (get(name("params"), "my key"), 'params["my key"]'),
        (get(name("params"), "when"), "params.when"),  # keywords are fields (issue 14)
        (bin_("*", bin_("+", 1, 2), 3), "(1 + 2) * 3"),
        (bin_("-", 1, bin_("-", 2, 3)), "1 - (2 - 3)"),
        (bin_("-", bin_("-", 1, 2), 3), "1 - 2 - 3"),
        ({"op": "and", "left": {"op": "or", "left": lit(True), "right": lit(False)}, "right": lit(True)},
         "(true or false) and true"),
        ({"op": "unary", "operator": "not", "arg": bin_("in", "a", name("xs"))}, 'not "a" in xs'),
        ({"op": "cond", "test": name("t"), "then": lit(1.5), "else": lit(None)}, "t ? 1.5 : null"),
        (interp('say "hi" ${', name("x"), "\n"), '"say \\"hi\\" \\${${x}\\n"'),
        (call("len", {"op": "list", "items": [lit({"a b": [1]})]}), 'len([{"a b": [1]}])'),
        (idx(name("xs"), {"op": "unary", "operator": "-", "arg": lit(1)}), "xs[-1]"),
        ({"op": "unary", "operator": "-", "arg": bin_("+", 1, 2)}, "-(1 + 2)"),
    ],
)
def test_describe(expr: dict[str, Any], source: str) -> None:
    assert describe(expr) == source


# --- property: nothing but EvaluationError ------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=10,
)
names = st.sampled_from(["params", "steps", "secrets", "item", "x", "__import__", "nope"])
keys = st.sampled_from(["a", "b", "order_id", "items", "__class__", "0"])
ops = st.sampled_from(["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "in", "??", "**"])
fns = st.sampled_from([*FUNCTIONS, "eval", "__import__"])
junk = st.none() | st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2)


def _trees(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(lambda o, k: {"op": "get", "obj": o, "key": k}, children, keys | junk),
        st.builds(lambda o, i: {"op": "index", "obj": o, "index": i}, children, children),
        st.builds(lambda f, a: {"op": "call", "fn": f, "args": a}, fns, st.lists(children, max_size=3)),
        st.builds(lambda o, a: {"op": "unary", "operator": o, "arg": a}, st.sampled_from(["-", "not", "~"]), children),
        st.builds(lambda o, l, r: {"op": "binary", "operator": o, "left": l, "right": r}, ops, children, children),
        st.builds(lambda o, l, r: {"op": o, "left": l, "right": r}, st.sampled_from(["and", "or"]), children, children),
        st.builds(lambda t, a, b: {"op": "cond", "test": t, "then": a, "else": b}, children, children, children),
        st.builds(lambda i: {"op": "list", "items": i}, st.lists(children, max_size=3)),
        st.builds(lambda e: {"op": "object", "entries": e}, st.lists(st.tuples(keys, children).map(list), max_size=3)),
        st.builds(lambda p: {"op": "interp", "parts": p}, st.lists(st.text(max_size=3) | children, max_size=3)),
        st.builds(lambda p, b: {"op": "lambda", "param": p, "body": b}, names, children),
        junk.map(lambda j: {"op": "mystery", "x": j}),
        junk,
    )


trees = st.recursive(
    st.builds(lit, json_values) | st.builds(name, names),
    _trees,
    max_leaves=25,
)
envs = st.fixed_dictionaries(
    {"params": st.dictionaries(keys, json_values, max_size=4), "item": json_values, "x": json_values}
)


@settings(max_examples=int(os.environ.get("FLOW_HYPOTHESIS_EXAMPLES", "400")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, envs, st.sampled_from([(), ("secrets",)]))
def test_random_trees_raise_only_evaluation_errors(tree: Any, env: dict[str, Any], defer: tuple[str, ...]) -> None:
    try:
        value = evaluate(tree, env, defer=defer)
    except EvaluationError:
        return
    try:
        describe(tree)
        resolve(value, {"secrets": {"a": 1}})
    except EvaluationError:
        pass

"""``flow start --params-file``: which lines are runs, and what a bad line says."""

from __future__ import annotations

import pytest

from flow.cli.start import Item, ParamsFileError, batches, read_items


def test_a_line_is_the_params_or_an_item_of_params_and_key() -> None:
    lines = ['{"order_id": 42}', "", '  {"params": {"order_id": 43}, "idempotency_key": "o-43"}',
             '{"params": {"x": 1}, "other": 2}', '{"params": 5}']
    assert list(read_items(lines)) == [
        Item(1, {"order_id": 42}),
        Item(3, {"order_id": 43}, "o-43"),
        # keys beside params other than idempotency_key, or params not an object: the params themselves
        Item(4, {"params": {"x": 1}, "other": 2}),
        Item(5, {"params": 5}),
    ]


@pytest.mark.parametrize("line, message", [
    ("[1, 2]", "runs.jsonl:2: a JSON list, not an object of params"),
    ("{oops", "runs.jsonl:2: not JSON"),
    ('{"params": {}, "idempotency_key": 7}', "runs.jsonl:2: idempotency_key must be a non-empty string"),
    ('{"params": {}, "idempotency_key": ""}', "runs.jsonl:2: idempotency_key must be a non-empty string"),
])
def test_a_bad_line_names_the_file_and_line(line: str, message: str) -> None:
    with pytest.raises(ParamsFileError) as caught:
        list(read_items(['{"ok": 1}', line], "runs.jsonl"))
    assert str(caught.value).startswith(message)


def test_batches_keep_the_order_and_the_size() -> None:
    items = [Item(i, {}) for i in range(1, 2502)]
    sizes = [len(b) for b in batches(items)]
    assert sizes == [1000, 1000, 501]
    assert [i.line for b in batches(items, 7) for i in b] == list(range(1, 2502))
    assert list(batches([])) == []

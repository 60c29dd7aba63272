"""Hypothesis strategies for hostile record bytes: arbitrary bytes, and JSON that is deep,
huge, of the wrong types, with NaN and Infinity, duplicate keys and invalid UTF-8."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

#: Deeper than any JSON parser's recursion limit (orjson stops at 1,024, msgspec recurses).
DEEP = 5000

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
    ),
    max_leaves=20,
)


def dumps(value: Any) -> bytes:
    """JSON of any value, integers past 64 bits included (orjson refuses those)."""
    return json.dumps(value).encode()


def deep(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


#: Named, so that a failing example prints a name rather than megabytes.
SHAPES = {
    "deep array": lambda: deep(DEEP),
    "deep object": lambda: b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "deep field": lambda: b'{"ts": 1, "org_id": "o", "key": "k", "x": ' + deep(DEEP) + b"}",
    "deep monitor": lambda: b'{"monitor": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
    "huge key": lambda: b'{"ts": 1, "org_id": "o", "key": "' + b"k" * 900_000 + b'"}',
    "huge event name": lambda: b'{"event": "' + b"e" * 900_000 + b'", "org_id": "o", "data": {}}',
    "huge data": lambda: dumps(
        {"data": ["x" * 1000] * 800, "event": "api_event.created", "org_id": "o"}
    ),
    "huge blank": lambda: b" " * 900_000,
}
shaped = st.sampled_from(sorted(SHAPES)).map(lambda name: SHAPES[name]())

non_finite = st.sampled_from(
    [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1" + b"0" * 400]
).map(lambda number: b'{"ts": ' + number + b', "org_id": "o", "key": "k", "count": 1}')


def with_duplicate_keys(value: dict[str, Any]) -> bytes:
    """``value`` as JSON with every key written twice, the second time with null."""
    parts = []
    for key, item in value.items():
        parts.append(dumps(key) + b":" + dumps(item))
        parts.append(dumps(key) + b":null")
    return b"{" + b",".join(parts) + b"}"


def with_invalid_utf8(text: bytes, position: int) -> bytes:
    """``text`` with an invalid UTF-8 byte put in at ``position``."""
    at = position % (len(text) + 1)
    return text[:at] + b"\xff\xfe" + text[at:]


def records_like(template: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Values close to a valid one: some fields replaced by anything, or removed."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        value = dict(template)
        for field in draw(st.sets(st.sampled_from(sorted(template)), max_size=len(template))):
            if draw(st.booleans()):
                value[field] = draw(json_values)
            else:
                del value[field]
        return dumps(value)

    return build()


def hostile(template: dict[str, Any]) -> st.SearchStrategy[bytes | None]:
    """Every kind of bad (and some good) value for records shaped like ``template``."""
    near = records_like(template)
    return st.one_of(
        st.none(),
        st.binary(max_size=200),
        json_values.map(dumps),
        near,
        shaped,
        non_finite,
        st.builds(with_duplicate_keys, st.just(template)),
        st.builds(with_invalid_utf8, near, st.integers(0, 500)),
    )

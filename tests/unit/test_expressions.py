from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.domain.expressions import (
    MAX_DEPTH,
    MAX_SOURCE_LENGTH,
    ExpressionError,
    compile_expression,
)

CONTEXT: dict[str, Any] = {
    "priority": "high",
    "category": "orders",
    "data": {
        "amount": 120,
        "ratio": 0.5,
        "customer": {"tier": "gold", "name": "Ann"},
        "tags": ["vip", "new", 3],
        "tags_string": "vip,new",
        "items": [{"sku": "A1", "qty": 2}, {"sku": "B2", "qty": 0}],
        "flag": True,
        "off": False,
        "empty": [],
        "nothing": None,
        "not": "keyword key",
    },
}

CASES = [
    # comparisons and numbers
    ("data.amount == 120", True),
    ("data.amount == 120.0", True),
    ("data.amount != 120", False),
    ("data.amount > 100", True),
    ("data.amount >= 120", True),
    ("data.amount < 120", False),
    ("data.amount <= 119.99", False),
    ("data.ratio < 1", True),
    ("data.ratio == 0.5", True),
    ("-1 < 0", True),
    ("data.amount > -5", True),
    # strings
    ("priority == 'high'", True),
    ('priority == "high"', True),
    ("priority != 'low'", True),
    ("'abc' < 'abd'", True),
    ("data.customer.tier == 'gold'", True),
    (r"'it\'s' == " + '"it\'s"', True),
    (r"'a\nb' == " + '"a\\nb"', True),
    (r"'\u00e9' == 'é'", True),
    # booleans are not numbers
    ("data.flag == true", True),
    ("data.flag == 1", False),
    ("data.off == 0", False),
    ("true == 1", False),
    ("data.flag > 0", False),
    # null and missing paths
    ("data.nothing == null", True),
    ("data.missing == null", True),
    ("missing.deeply.nested == null", True),
    ("data.amount.more == null", True),
    ("data.missing != null", False),
    ("data.missing < 3", False),
    ("data.missing >= 3", False),
    ("null < 3", False),
    # incompatible types are false, not errors
    ("'a' > 1", False),
    ("'a' < 1", False),
    ("data.customer > 1", False),
    ("data.tags == 'vip'", False),
    ("'1' == 1", False),
    # membership
    ("'vip' in data.tags", True),
    ("3 in data.tags", True),
    ("3.0 in data.tags", True),
    ("'gold' in data.tags", False),
    ("'gold' not in data.tags", True),
    ("'vip' in data.tags_string", True),
    ("'vi' in data.tags_string", True),
    ("1 in data.tags_string", False),
    ("'tier' in data.customer", True),
    ("'age' in data.customer", False),
    ("data.customer.tier in ['gold', 'vip']", True),
    ("data.customer.tier not in ['gold', 'vip']", False),
    ("'x' in data.missing", False),
    ("'x' not in data.missing", True),
    ("'x' in 5", False),
    ("[1, 'a'] == [1.0, 'a']", True),
    ("[1, 2] in [[1, 2], 3]", True),
    ("[] == data.empty", True),
    ("[1, 2,] == [1, 2]", True),
    # indexing
    ("data.items[0].sku == 'A1'", True),
    ("data.items[1].qty == 0", True),
    ("data.items[2].sku == null", True),
    ("data.items[99] == null", True),
    ("data.customer[0] == null", True),
    ("data.tags_string[0] == null", True),
    # keys that are keywords
    ("data.not == 'keyword key'", True),
    # truthiness of bare paths
    ("data.flag", True),
    ("data.off", False),
    ("data.missing", False),
    ("data.empty", False),
    ("data.tags", True),
    ("data.items[1].qty", False),
    ("data.customer.name", True),
    ("not data.missing", True),
    ("not not data.flag", True),
    # boolean logic and precedence
    ("data.flag and data.amount > 100", True),
    ("data.off or data.amount > 100", True),
    ("data.off or data.missing", False),
    ("true or false and false", True),
    ("(true or false) and false", False),
    ("not true or true", True),
    ("not (true or true)", False),
    ("(data.amount > 100) == true", True),
    ("data.amount > 100 and priority == 'high' and category == 'orders'", True),
    ("null", False),
    ("0", False),
    ("''", False),
    ("'x'", True),
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_expression_table(source: str, expected: bool) -> None:
    assert compile_expression(source).evaluate(CONTEXT) is expected


def test_names_are_the_dotted_paths_referenced() -> None:
    expr = compile_expression(
        "data.amount > 1 and (priority == 'x' or data.items[0].sku in data.skus) and true"
    )
    assert expr.names == frozenset({"data.amount", "priority", "data.items[0].sku", "data.skus"})
    assert expr.source.startswith("data.amount")
    assert compile_expression("1 == 1").names == frozenset()


def test_expressions_compare_by_source() -> None:
    assert compile_expression("a == 1") == compile_expression("a == 1")
    assert hash(compile_expression("a")) == hash(compile_expression("a"))


@pytest.mark.parametrize(
    ("source", "position", "fragment"),
    [
        ("a ==", 4, "expected a value"),
        ("(a == 1", 7, "expected ')'"),
        ("a == 1)", 6, "unexpected ')'"),
        ("a == 'oops", 5, "unterminated string"),
        (r"a == 'bad \q'", 10, "invalid escape"),
        ("a.", 2, "expected a name after '.'"),
        ("a.1", 2, "expected a name after '.'"),
        ("a[x]", 2, "expected an integer index"),
        ("a[1.5]", 2, "expected an integer index"),
        ("a[1", 3, "expected ']'"),
        ("1 < 2 < 3", 6, "chained comparisons"),
        ("a == b not in c", 7, "chained comparisons"),
        ("a in b in c", 7, "chained comparisons"),
        ("a = 1", 2, "unexpected character '='"),
        ("a && b", 2, "unexpected character '&'"),
        ("a and", 5, "expected a value"),
        ("and a", 0, "expected a value"),
        ("a not b", 2, "unexpected 'not'"),
        ("a not 'in' b", 2, "unexpected 'not'"),
        ("[1, 2", 5, "expected ',' or ']'"),
        ("[a]", 1, "expected a value"),
        ("a == - b", 5, "expected a value"),
        ("f(1)", 1, "unexpected '('"),
        ("a b", 2, "unexpected 'b'"),
    ],
)
def test_syntax_errors_name_the_position(source: str, position: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    assert info.value.position == position
    assert fragment in str(info.value)
    assert f"at position {position}" in str(info.value)


@pytest.mark.parametrize("source", ["", "   ", "\n"])
def test_empty_expressions_are_refused(source: str) -> None:
    with pytest.raises(ExpressionError, match="empty"):
        compile_expression(source)


def test_length_limit() -> None:
    ok = "a == 1" + " " * (MAX_SOURCE_LENGTH - 6)
    compile_expression(ok)
    with pytest.raises(ExpressionError, match="longer than"):
        compile_expression(ok + " ")


@pytest.mark.parametrize(
    "build",
    [
        lambda n: "(" * n + "a" + ")" * n,
        lambda n: "not " * n + "a",
        lambda n: "a == " + "[" * n + "]" * n,
    ],
)
def test_nesting_depth_limit(build: Any) -> None:
    assert compile_expression(build(MAX_DEPTH)).evaluate({}) in (True, False)
    with pytest.raises(ExpressionError, match="nested deeper"):
        compile_expression(build(MAX_DEPTH + 1))


def test_long_flat_chains_are_not_nesting() -> None:
    source = " or ".join(["a"] * 150)
    assert len(source) <= MAX_SOURCE_LENGTH
    assert compile_expression(source).evaluate({"a": 1}) is True


def test_only_mapping_keys_and_sequence_indexes_are_reachable() -> None:
    class Sneaky:
        secret = "s"

        def __getitem__(self, key: Any) -> str:
            raise AssertionError("never indexed")

    ctx = {"obj": Sneaky(), "s": "text", "n": 5}
    assert compile_expression("obj.secret == null").evaluate(ctx)
    assert compile_expression("s.upper == null").evaluate(ctx)
    assert compile_expression("n.real == null").evaluate(ctx)
    assert compile_expression("obj").evaluate(ctx) is False  # not JSON-like: treated as null
    assert compile_expression("obj == obj").evaluate(ctx) is False


def test_deep_and_cyclic_data_do_not_break_equality() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    ctx = {"a": deep, "b": deep, "c": cyclic}
    assert compile_expression("a == b").evaluate(ctx)
    assert compile_expression("c == c").evaluate(ctx)
    assert not compile_expression("a == c").evaluate(ctx)


def test_nan_is_unequal_and_unordered() -> None:
    ctx = {"x": math.nan}
    assert not compile_expression("x == x").evaluate(ctx)
    assert not compile_expression("x < 1 or x >= 1").evaluate(ctx)


# -- properties ------------------------------------------------------------------------------

FAST = settings(max_examples=200, deadline=None)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "data"]), inner, max_size=4)
    ),
    max_leaves=20,
)
contexts = st.dictionaries(st.sampled_from(["a", "b", "c", "data"]), json_values, max_size=4)

SNIPPETS = [
    "a", "b", "data", ".", "a.b", "data.c", "[0]", "[", "]", "(", ")", ",", " ", "==", "!=",
    "<", "<=", ">", ">=", "in", "not", "and", "or", "true", "false", "null", "1", "2.5",
    "-", "'x'", '"a"', "'", '"', "\\", "[1, 'a']", "#", "1.", "0001", "__class__",
]  # fmt: skip
grammar_soup = st.lists(st.sampled_from(SNIPPETS), max_size=30).map(" ".join)


@FAST
@given(st.text(max_size=60) | grammar_soup)
def test_arbitrary_text_compiles_or_raises_expression_error(text: str) -> None:
    with contextlib.suppress(ExpressionError):
        compile_expression(text)


paths = st.lists(
    st.sampled_from(["a", "b", "c", "data"]).map(".{}".format) | st.sampled_from(["[0]", "[1]"]),
    max_size=3,
).flatmap(lambda rest: st.sampled_from(["a", "b", "c", "data"]).map(lambda h: h + "".join(rest)))
atoms = paths | st.sampled_from(["1", "-2.5", "'a'", "true", "null", "[1, 'a', [null]]", "[]"])
well_formed = st.recursive(
    atoms,
    lambda inner: (
        st.tuples(inner, st.sampled_from(["==", "!=", "<", ">=", "in", "not in"]), atoms).map(
            " ".join
        )
        | inner.map("not {}".format)
        | inner.map("({})".format)
        | st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(" ".join)
    ),
    max_leaves=12,
)


@FAST
@given(well_formed | grammar_soup, contexts)
def test_evaluation_never_raises(text: str, context: dict[str, Any]) -> None:
    try:
        expr = compile_expression(text)
    except ExpressionError:
        return
    assert expr.evaluate(context) in (True, False)


@FAST
@given(well_formed)
def test_generated_well_formed_expressions_compile(text: str) -> None:
    try:
        compile_expression(text)
    except ExpressionError as error:
        # only a comparison whose left side is itself a bare comparison is refused
        message = str(error)
    else:
        return
    assert "chained" in message or "nested deeper" in message


def _reference(op: str, left: Any, right: Any) -> bool:
    """An independent statement of the semantics over scalars and lists of scalars."""

    def kind(v: Any) -> str:
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, int | float):
            return "number"
        return type(v).__name__

    def eq(x: Any, y: Any) -> bool:
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(eq(p, q) for p, q in zip(x, y, strict=True))
        return kind(x) == kind(y) and bool(x == y)

    if op in ("==", "!="):
        return eq(left, right) == (op == "==")
    if op in ("in", "not in"):
        if isinstance(right, list):
            found = any(eq(left, item) for item in right)
        elif isinstance(right, str):
            found = isinstance(left, str) and left in right
        else:
            found = False
        return found == (op == "in")
    if kind(left) != kind(right) or kind(left) not in ("number", "str"):
        return False
    return bool({"<": left < right, "<=": left <= right, ">": left > right,
                 ">=": left >= right}[op])  # fmt: skip


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(-1000, 1000, allow_nan=False).map(lambda f: round(f, 3))
    | st.text(alphabet="ab'\"\\é\n", max_size=4)
)
operands = scalars | st.lists(scalars, max_size=3)


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, float):
        return repr(value) if value >= 0 else f"-{-value!r}"
    return str(value)


@FAST
@given(
    left=operands,
    right=operands,
    op=st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]),
    left_from_context=st.booleans(),
    negate=st.booleans(),
)
def test_comparisons_agree_with_a_reference(
    left: Any, right: Any, op: str, left_from_context: bool, negate: bool
) -> None:
    lhs = "data.value" if left_from_context else _literal(left)
    source = f"{lhs} {op} {_literal(right)}"
    if negate:
        source = f"not ({source})"
    expected = _reference(op, left, right) != negate
    assert compile_expression(source).evaluate({"data": {"value": left}}) is expected, source

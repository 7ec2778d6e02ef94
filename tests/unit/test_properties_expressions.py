"""Properties of the rule expression language (herald.domain.expressions).

The expressions are generated as small trees, printed to source by the printer below (the
module has none of its own) and evaluated by an independent reference interpreter: the
compiled expression must agree with it on arbitrary JSON-like contexts.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.domain.expressions import (
    MAX_SOURCE_LENGTH,
    Expression,
    ExpressionError,
    compile_expression,
)

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYWORDS = frozenset({"and", "or", "not", "in", "true", "false", "null"})
KEYS = ["a", "b", "data", "x", "not", "in"]  # keywords are plain keys after a dot

# -- JSON-like data --------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and the infinities included
    | st.text(max_size=6)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=25,
)
contexts = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5)


# -- the reference semantics -----------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "other"


def ref_equal(a: Any, b: Any) -> bool:
    if _kind(a) != _kind(b) or _kind(a) == "other":
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(ref_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(ref_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def ref_compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return ref_equal(a, b)
    if op == "!=":
        return not ref_equal(a, b)
    if op in ("in", "not in"):
        if isinstance(b, list):
            found = any(ref_equal(a, item) for item in b)
        elif isinstance(b, str | dict):
            found = isinstance(a, str) and a in b
        else:
            found = False
        return found == (op == "in")
    if _kind(a) != _kind(b) or _kind(a) not in ("number", "string"):
        return False
    return bool({"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])


def ref_truthy(value: Any) -> bool:
    return _kind(value) != "other" and bool(value)


# -- expression trees, their printer and their reference evaluation -------------------------


@dataclass(frozen=True)
class Lit:
    value: Any


@dataclass(frozen=True)
class Path:
    segments: tuple[str | int, ...]


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Cmp:
    op: str
    left: Lit | Path
    right: Lit | Path


Node = Lit | Path | Not | BoolOp | Cmp


def number_literal(value: int | float) -> str:
    """The grammar has no exponents: floats print positionally, as repr() rounds them, and
    always with a fraction (without one the parser reads an int, and 1e17 != 10**17 + 1)."""
    if isinstance(value, int):
        text = str(abs(value))
    else:
        text = format(Decimal(repr(abs(value))), "f")
        text = text if "." in text else f"{text}.0"
    negative = math.copysign(1, value) < 0
    return f"-{text}" if negative else text


def string_literal(value: str, quote: str = '"', escape_all: bool = False) -> str:
    out = []
    for char in value:
        if char in (quote, "\\"):
            out.append("\\" + char)
        elif escape_all and ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)  # anything else, a newline included, is itself in a string
    return quote + "".join(out) + quote


def literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_literal(value)
    if isinstance(value, str):
        return string_literal(value)
    return "[" + ", ".join(literal(v) for v in value) + "]"


def path_text(segments: tuple[str | int, ...]) -> str:
    return "".join(
        f"[{s}]" if isinstance(s, int) else (s if i == 0 else f".{s}")
        for i, s in enumerate(segments)
    )


def show(node: Node, space: str = " ", parens: bool = False) -> str:
    """Source for ``node``: minimal parentheses, or every compound wrapped when ``parens``."""

    def wrap(text: str) -> str:
        return f"({text})"

    if isinstance(node, Lit):
        return literal(node.value)
    if isinstance(node, Path):
        return path_text(node.segments)
    if isinstance(node, Cmp):
        return f"{show(node.left)}{space}{node.op}{space}{show(node.right)}"
    if isinstance(node, Not):
        inner = show(node.operand, space, parens)
        needs = parens or isinstance(node.operand, BoolOp)
        return f"not{space}{wrap(inner) if needs else inner}"
    parts = []
    for operand in node.operands:
        inner = show(operand, space, parens)
        # "and" binds tighter than "or": only an "or" inside an "and" needs parentheses
        needs = parens or (
            isinstance(operand, BoolOp) and (operand.op == "or" or node.op == operand.op)
        )
        parts.append(wrap(inner) if needs else inner)
    return f"{space}{node.op}{space}".join(parts)


def resolve(context: Any, segments: tuple[str | int, ...]) -> Any:
    value = context
    for segment in segments:
        if isinstance(segment, int):
            if not isinstance(value, list) or segment >= len(value):
                return None
        elif not isinstance(value, dict) or segment not in value:
            return None
        value = value[segment]
    return value


def ref_value(node: Lit | Path, context: dict[str, Any]) -> Any:
    return node.value if isinstance(node, Lit) else resolve(context, node.segments)


def ref_evaluate(node: Node, context: dict[str, Any]) -> bool:
    if isinstance(node, Lit | Path):
        return ref_truthy(ref_value(node, context))
    if isinstance(node, Cmp):
        return ref_compare(node.op, ref_value(node.left, context), ref_value(node.right, context))
    if isinstance(node, Not):
        return not ref_evaluate(node.operand, context)
    results = [ref_evaluate(operand, context) for operand in node.operands]
    return all(results) if node.op == "and" else any(results)


def paths_in(node: Node) -> set[str]:
    if isinstance(node, Path):
        return {path_text(node.segments)}
    if isinstance(node, Lit):
        return set()
    if isinstance(node, Cmp):
        return paths_in(node.left) | paths_in(node.right)
    if isinstance(node, Not):
        return paths_in(node.operand)
    return set().union(*(paths_in(o) for o in node.operands))


literal_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
literal_values = literal_scalars | st.lists(literal_scalars, max_size=3)
path_nodes = st.builds(
    lambda head, rest: Path((head, *rest)),
    st.sampled_from(["a", "b", "data", "x"]),
    st.lists(st.sampled_from(KEYS) | st.integers(0, 2), max_size=3),
)
operands = st.builds(Lit, literal_values) | path_nodes
comparisons = st.builds(
    Cmp, st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]), operands, operands
)
trees: st.SearchStrategy[Node] = st.recursive(
    operands | comparisons,
    lambda inner: (
        st.builds(Not, inner)
        | st.builds(
            BoolOp,
            st.sampled_from(["and", "or"]),
            st.lists(inner, min_size=2, max_size=3).map(tuple),
        )
    ),
    max_leaves=10,
)


# -- parsing ---------------------------------------------------------------------------------

SNIPPETS = [
    "a", "data", ".", "a.b", "[0]", "[", "]", "(", ")", ",", " ", "==", "!=", "<", "<=", ">",
    ">=", "in", "not", "and", "or", "true", "false", "null", "1", "2.5", "-", "'x'", '"y"',
    "'", '"', "\\", "\\u12", "\\u00e9", "[1, 'a']", "1.", "0001", "__class__", "\n", "\t",
    "\u00a0", "é", "\x00", "9" * 40,
]  # fmt: skip
soups = st.lists(st.sampled_from(SNIPPETS), max_size=60).map("".join)
long_repeats = st.builds(
    lambda unit, n: (unit * n)[: MAX_SOURCE_LENGTH + 5],
    st.sampled_from(["(", "not ", "[", "a.", "'\\", "\\\\", "a and ", "-", "a[0]", "((a)"]),
    st.integers(1, MAX_SOURCE_LENGTH),
)


def compile_or_error(text: Any) -> Expression | ExpressionError:
    try:
        return compile_expression(text)
    except ExpressionError as error:
        return error


@PROPERTY
@given(st.text(max_size=80) | soups | long_repeats)
def test_any_text_compiles_or_raises_expression_error_at_a_real_position(text: str) -> None:
    result = compile_or_error(text)
    if isinstance(result, ExpressionError):
        assert result.position is None or 0 <= result.position <= len(text), result
    else:
        assert result.source == text
        assert result.evaluate({}) in (True, False)


@PROPERTY
@given(st.none() | st.integers() | st.binary(max_size=5) | st.lists(st.text(max_size=3)))
def test_anything_but_text_is_an_expression_error(value: Any) -> None:
    assert isinstance(compile_or_error(value), ExpressionError)


@PROPERTY
@given(trees, st.sampled_from([" ", "  ", "\n", "\t ", " \r\n "]), st.booleans())
def test_printed_trees_compile_and_name_their_paths(node: Node, space: str, parens: bool) -> None:
    source = show(node, space, parens)
    if len(source) > MAX_SOURCE_LENGTH:
        return
    expression = compile_expression(source)
    assert expression.names == paths_in(node)


# -- evaluation ------------------------------------------------------------------------------


@PROPERTY
@given(soups | st.text(max_size=40), contexts)
def test_evaluating_whatever_compiles_never_raises(text: str, context: dict[str, Any]) -> None:
    with contextlib.suppress(ExpressionError):
        assert compile_expression(text).evaluate(context) in (True, False)


@PROPERTY
@given(trees, contexts, st.sampled_from([" ", "\n  "]), st.booleans())
def test_evaluation_agrees_with_the_reference(
    node: Node, context: dict[str, Any], space: str, parens: bool
) -> None:
    source = show(node, space, parens)
    if len(source) > MAX_SOURCE_LENGTH:
        return
    assert compile_expression(source).evaluate(context) is ref_evaluate(node, context), source


@PROPERTY
@given(json_values, json_values)
def test_paths_to_any_value_compare_like_the_reference(left: Any, right: Any) -> None:
    context = {"data": {"l": left, "r": right}}
    for op in ("==", "!=", "<", "<=", ">", ">=", "in", "not in"):
        got = compile_expression(f"data.l {op} data.r").evaluate(context)
        assert got is ref_compare(op, left, right), op
    assert compile_expression("data.l").evaluate(context) is ref_truthy(left)


OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
numbers = st.integers() | st.floats(allow_nan=False, allow_infinity=False)


@PROPERTY
@given(numbers, st.sampled_from(sorted(OPS)), numbers, st.booleans())
def test_number_comparisons_are_pythons(field: Any, op: str, value: Any, flipped: bool) -> None:
    source = (
        f"{number_literal(value)} {op} data.n"
        if flipped
        else f"data.n {op} {number_literal(value)}"
    )
    if len(source) > MAX_SOURCE_LENGTH:
        return
    expected = OPS[op](value, field) if flipped else OPS[op](field, value)
    assert compile_expression(source).evaluate({"data": {"n": field}}) is expected, source


@PROPERTY
@given(
    st.text(max_size=12),
    st.sampled_from(sorted(OPS)),
    st.text(max_size=12),
    st.sampled_from(["'", '"']),
    st.booleans(),
)
def test_string_comparisons_are_pythons(
    field: str, op: str, value: str, quote: str, escape_all: bool
) -> None:
    source = f"data.s {op} {string_literal(value, quote, escape_all)}"
    assert compile_expression(source).evaluate({"data": {"s": field}}) is OPS[op](field, value)
    contains = compile_expression(f"{string_literal(value, quote)} in data.s")
    assert contains.evaluate({"data": {"s": field}}) is (value in field)


# -- boolean algebra -------------------------------------------------------------------------

atoms = st.sampled_from(["data.f[0]", "data.f[1]", "data.f[2]", "true", "false", "null"])
truth_contexts = st.builds(
    lambda values: {"data": {"f": values}},
    st.lists(json_values, min_size=3, max_size=3),
)
LAWS = [
    ("not ({a} and {b})", "not {a} or not {b}"),  # De Morgan
    ("not ({a} or {b})", "not {a} and not {b}"),
    ("not not {a}", "{a}"),
    ("{a} and {b}", "{b} and {a}"),  # commutativity
    ("{a} or {b}", "{b} or {a}"),
    ("{a} and ({b} or {c})", "({a} and {b}) or ({a} and {c})"),  # distributivity
    ("{a} or ({b} and {c})", "({a} or {b}) and ({a} or {c})"),
    ("{a} or {a} and {b}", "{a}"),  # absorption, and "and" binds tighter
    ("{a} or {b} and {c}", "{a} or ({b} and {c})"),
    ("not {a} and {b}", "(not {a}) and {b}"),
    ("{a} and not {a}", "false"),
    ("{a} or not {a}", "true"),
]


@PROPERTY
@given(atoms, atoms, atoms, truth_contexts)
def test_and_or_not_follow_boolean_algebra(a: str, b: str, c: str, context: dict[str, Any]) -> None:
    truth = {"true": True, "false": False, "null": False}
    values = [
        truth[atom] if atom in truth else ref_truthy(context["data"]["f"][int(atom[-2])])
        for atom in (a, b, c)
    ]
    expected = compile_expression(f"{a} and ({b} or not {c})").evaluate(context)
    assert expected is (values[0] and (values[1] or not values[2]))
    for left, right in LAWS:
        lhs = compile_expression(left.format(a=a, b=b, c=c)).evaluate(context)
        rhs = compile_expression(right.format(a=a, b=b, c=c)).evaluate(context)
        assert lhs is rhs, (left, right, a, b, c)

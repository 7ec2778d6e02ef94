"""A small, safe expression language for rule conditions.

``data.amount >= 100 and data.customer.tier in ["gold", "vip"]``. Expressions are parsed
by hand into a tiny tree and interpreted over a JSON-like context; Python's ``eval`` and
``ast`` are never involved, there are no calls, loops or attribute access on objects, and
evaluation never raises: a missing path is ``null`` and a comparison between values of
incompatible types is false.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

MAX_SOURCE_LENGTH: Final = 1000
MAX_DEPTH: Final = 32

_KEYWORDS: Final = frozenset({"and", "or", "not", "in", "true", "false", "null"})
_CONSTANTS: Final[dict[str, Any]] = {"true": True, "false": False, "null": None}
_COMPARISONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">="})
_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "/": "/"}
_TOKEN = re.compile(
    r"(?P<space>[ \t\r\n]+)"
    r"|(?P<number>[0-9]+(?:\.[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|\.|-)"
    r"|(?P<quote>['\"])"
)


class ExpressionError(ValueError):
    """The expression text is not valid; ``position`` is a 0-based character offset."""

    def __init__(self, message: str, position: int | None = None) -> None:
        if position is not None:
            message = f"{message} at position {position}"
        super().__init__(message)
        self.position = position


# -- tokens ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "number", "string", "name", "op", "end"
    value: Any
    position: int


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "end of expression"
    if token.kind == "string":
        return "a string"
    return repr(str(token.value))


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote, i = text[start], start + 1
    chars: list[str] = []
    while i < len(text):
        char = text[i]
        if char == quote:
            return "".join(chars), i + 1
        if char == "\\":
            escape = text[i + 1 : i + 2]
            if escape in _ESCAPES:
                chars.append(_ESCAPES[escape])
                i += 2
                continue
            digits = text[i + 2 : i + 6]
            if escape == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", digits):
                chars.append(chr(int(digits, 16)))
                i += 6
                continue
            raise ExpressionError("invalid escape sequence in string", i)
        chars.append(char)
        i += 1
    raise ExpressionError("unterminated string", start)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        match = _TOKEN.match(text, i)
        if match is None:
            raise ExpressionError(f"unexpected character {text[i]!r}", i)
        kind = match.lastgroup
        if kind == "quote":
            value, i = _read_string(text, i)
            tokens.append(_Token("string", value, match.start()))
            continue
        if kind == "number":
            raw = match.group()
            tokens.append(_Token("number", float(raw) if "." in raw else int(raw), i))
        elif kind in ("name", "op"):
            tokens.append(_Token(str(kind), match.group(), i))
        i = match.end()
    tokens.append(_Token("end", None, len(text)))
    return tokens


# -- tree ------------------------------------------------------------------------------------
# Nodes are tuples so that evaluation is one small dispatch over their tag:
#   ("lit", value) ("path", (segment, ...)) ("not", node) ("and"|"or", (node, ...))
#   ("cmp", op, left, right)
Node = tuple[Any, ...]


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0
        self.names: set[str] = set()

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def at(self, kind: str, value: Any = None) -> bool:
        token = self.token
        return token.kind == kind and (value is None or token.value == value)

    def expect(self, kind: str, value: str, what: str) -> _Token:
        if not self.at(kind, value):
            raise ExpressionError(
                f"expected {what}, found {_describe(self.token)}", self.token.position
            )
        return self.advance()

    def nest(self, position: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"expression nested deeper than {MAX_DEPTH} levels", position)

    def parse(self) -> Node:
        if self.at("end"):
            raise ExpressionError("empty expression")
        node = self.parse_or()
        if not self.at("end"):
            raise ExpressionError(f"unexpected {_describe(self.token)}", self.token.position)
        return node

    def parse_or(self) -> Node:
        # and/or chains are flat (not nested) so long chains do not count toward the depth
        operands = [self.parse_and()]
        while self.at("name", "or"):
            self.advance()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else ("or", tuple(operands))

    def parse_and(self) -> Node:
        operands = [self.parse_not()]
        while self.at("name", "and"):
            self.advance()
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else ("and", tuple(operands))

    def parse_not(self) -> Node:
        if self.at("name", "not"):
            self.nest(self.advance().position)
            node = ("not", self.parse_not())
            self.depth -= 1
            return node
        return self.parse_comparison()

    def comparison_operator(self) -> str | None:
        token = self.token
        if token.kind == "op" and token.value in _COMPARISONS:
            self.advance()
            return str(token.value)
        if self.at("name", "in"):
            self.advance()
            return "in"
        following = self.tokens[self.index + 1] if self.at("name", "not") else None
        if following is not None and following.kind == "name" and following.value == "in":
            self.index += 2
            return "not in"
        return None

    def parse_comparison(self) -> Node:
        left = self.parse_operand()
        op = self.comparison_operator()
        if op is None:
            return left
        right = self.parse_operand()
        position = self.token.position
        if self.comparison_operator() is not None:
            raise ExpressionError("chained comparisons are not supported; use 'and'", position)
        return ("cmp", op, left, right)

    def parse_operand(self) -> Node:
        token = self.token
        if token.kind == "op" and token.value == "(":
            self.nest(self.advance().position)
            node = self.parse_or()
            self.expect("op", ")", "')'")
            self.depth -= 1
            return node
        if token.kind == "name" and token.value not in _KEYWORDS:
            return self.parse_path()
        return ("lit", self.parse_literal())

    def parse_literal(self) -> Any:
        token = self.advance()
        if token.kind in ("number", "string"):
            return token.value
        if token.kind == "name" and token.value in _CONSTANTS:
            return _CONSTANTS[token.value]
        if token.kind == "op" and token.value == "-" and self.at("number"):
            return -self.advance().value
        if token.kind == "op" and token.value == "[":
            return self.parse_list(token.position)
        raise ExpressionError(f"expected a value, found {_describe(token)}", token.position)

    def parse_list(self, position: int) -> list[Any]:
        self.nest(position)
        items: list[Any] = []
        while not self.at("op", "]"):
            items.append(self.parse_literal())
            if not self.at("op", ","):
                break
            self.advance()
        self.expect("op", "]", "',' or ']'")
        self.depth -= 1
        return items

    def parse_path(self) -> Node:
        segments: list[str | int] = [self.advance().value]
        while True:
            if self.at("op", "."):
                self.advance()
                # after a dot keywords are plain keys: `data.not` is the key "not"
                if not self.at("name"):
                    raise ExpressionError(
                        f"expected a name after '.', found {_describe(self.token)}",
                        self.token.position,
                    )
                segments.append(self.advance().value)
            elif self.at("op", "["):
                self.advance()
                if not (self.at("number") and isinstance(self.token.value, int)):
                    raise ExpressionError(
                        f"expected an integer index, found {_describe(self.token)}",
                        self.token.position,
                    )
                segments.append(self.advance().value)
                self.expect("op", "]", "']'")
            else:
                break
        self.names.add(_path_text(segments))
        return ("path", tuple(segments))


def _path_text(segments: Sequence[str | int]) -> str:
    return "".join(
        f"[{s}]" if isinstance(s, int) else (s if i == 0 else f".{s}")
        for i, s in enumerate(segments)
    )


# -- evaluation ------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _same_scalar_kind(a: Any, b: Any) -> bool:
    return (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))


def _equal(a: Any, b: Any) -> bool:
    # An explicit stack instead of recursion: deeply nested context values cannot overflow
    # Python's stack, and the seen set makes even a cyclic structure terminate.
    stack, seen = [(a, b)], set()
    while stack:
        x, y = stack.pop()
        if isinstance(x, bool) or isinstance(y, bool):
            if x is not y:
                return False
        elif _same_scalar_kind(x, y):
            if x != y:
                return False
        elif x is None or y is None:
            if x is not y:
                return False
        elif (_is_list(x) and _is_list(y)) or (isinstance(x, Mapping) and isinstance(y, Mapping)):
            if (id(x), id(y)) in seen:
                continue
            seen.add((id(x), id(y)))
            if len(x) != len(y):
                return False
            if isinstance(x, Mapping):
                if set(x) != set(y):
                    return False
                stack.extend((x[k], y[k]) for k in x)
            else:
                stack.extend(zip(x, y, strict=True))
        else:
            return False
    return True


def _less(a: Any, b: Any, or_equal: bool) -> bool:
    if _same_scalar_kind(a, b):
        return bool(a <= b if or_equal else a < b)
    return False


def _contains(item: Any, container: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, Mapping):
        return isinstance(item, str) and item in container
    if _is_list(container):
        return any(_equal(item, element) for element in container)
    return False


def _compare(op: str, a: Any, b: Any) -> bool:
    match op:
        case "==":
            return _equal(a, b)
        case "!=":
            return not _equal(a, b)
        case "<":
            return _less(a, b, or_equal=False)
        case "<=":
            return _less(a, b, or_equal=True)
        case ">":
            return _less(b, a, or_equal=False)
        case ">=":
            return _less(b, a, or_equal=True)
        case "in":
            return _contains(a, b)
        case _:  # "not in"
            return not _contains(a, b)


def _resolve(context: Mapping[str, Any], segments: tuple[str | int, ...]) -> Any:
    value: Any = context
    for segment in segments:
        if isinstance(segment, int):
            if not _is_list(value) or segment >= len(value):
                return None
        elif not isinstance(value, Mapping) or segment not in value:
            return None
        value = value[segment]
    return value


def _truthy(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return bool(value)
    if _is_list(value) or isinstance(value, Mapping):
        return len(value) > 0
    return False  # not JSON-like: treated as null rather than asking the object


def _evaluate(node: Node, context: Mapping[str, Any]) -> Any:
    tag = node[0]
    if tag == "lit":
        return node[1]
    if tag == "path":
        return _resolve(context, node[1])
    if tag == "not":
        return not _truthy(_evaluate(node[1], context))
    if tag == "and":
        return all(_truthy(_evaluate(n, context)) for n in node[1])
    if tag == "or":
        return any(_truthy(_evaluate(n, context)) for n in node[1])
    _, op, left, right = node
    return _compare(op, _evaluate(left, context), _evaluate(right, context))


@dataclass(frozen=True)
class Expression:
    """A compiled condition; build it with :func:`compile_expression`."""

    source: str
    names: frozenset[str]
    _root: Node = field(repr=False, compare=False)

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        """The truth of the expression over ``context``; never raises for JSON-like data."""
        return _truthy(_evaluate(self._root, context))


def compile_expression(text: str) -> Expression:
    """Parse ``text``; raises :class:`ExpressionError` naming the offending position."""
    if not isinstance(text, str):
        raise ExpressionError("an expression must be a string")
    if len(text) > MAX_SOURCE_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_SOURCE_LENGTH} characters")
    parser = _Parser(text)
    root = parser.parse()
    return Expression(source=text, names=frozenset(parser.names), _root=root)

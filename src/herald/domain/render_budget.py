"""How much work one template render may do: the sandbox keeps templates from reading what
they must not; this keeps them from spending what they must not (CPU time and memory).

A template admin is trusted with content, not with a worker's CPU: ``{% for %}`` nested three
deep over ``range(100000)``, a macro that calls itself twice per level, ``"x" * 99999 ~ ...``
doubled in a loop, or ``"x"|center(10**9)`` would each stall or exhaust a worker. Every render
gets a budget of steps: each loop iteration and each call costs one, building a long value
costs in proportion to its length. Functions that could build a huge value in a single call
are checked before they run, as no step count can interrupt them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final, NoReturn

from jinja2.exceptions import SecurityError
from jinja2.sandbox import safe_range

MAX_STEPS: Final = 50_000  # per rendered field: under 1 s of the slowest step (macro calls)
MAX_VALUE_CHARS: Final = 1_000_000  # any string or list a template builds
_CHARS_PER_STEP: Final = 10_000
_MAX_WIDTH: Final = 10_000  # center/indent/wordwrap/batch/... widths and counts

# The str methods a template may call; the others (center, ljust, zfill, expandtabs,
# replace, join, format, translate, ...) can build a huge string in one C call. Their
# filter counterparts below are checked first.
STR_METHODS: Final = frozenset(
    {
        "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha",
        "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper",
        "lower", "lstrip", "partition", "removeprefix", "removesuffix", "rfind", "rindex",
        "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip",
        "swapcase", "title", "upper",
    }
)  # fmt: skip


class BudgetExceededError(SecurityError):
    """The render did more work, or built a larger value, than a notification may need."""


_left: ContextVar[list[int] | None] = ContextVar("herald_render_budget", default=None)


@contextmanager
def budget() -> Iterator[None]:
    """Count the steps of the render inside; outside one (compiling), nothing is counted."""
    token = _left.set([MAX_STEPS])
    try:
        yield
    finally:
        _left.reset(token)


def spend(steps: int) -> None:
    left = _left.get()
    if left is None:
        return
    left[0] -= steps
    if left[0] < 0:
        raise BudgetExceededError(f"the template does more than {MAX_STEPS} steps")


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """What a ``{% for %}`` loop iterates: one step per item."""
    for item in iterable:
        spend(1)
        yield item


def sized(value: Any) -> Any:
    """A value the template just built: refused past MAX_VALUE_CHARS, charged by length."""
    if isinstance(value, str | list | tuple):
        if len(value) > MAX_VALUE_CHARS:
            refuse(f"a value longer than {MAX_VALUE_CHARS}")
        spend(1 + len(value) // _CHARS_PER_STEP)
    return value


def refuse(what: str) -> NoReturn:
    raise BudgetExceededError(f"not allowed: {what}")


def _small(value: Any, name: str) -> None:
    if isinstance(value, int) and abs(value) > _MAX_WIDTH:
        refuse(f"{name} larger than {_MAX_WIDTH}")


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(str(value))


# -- filters that could build a huge value in one call ----------------------------------------

_FORMAT_WIDTH = re.compile(r"%[^a-zA-Z%]*?(\*|\d{5,})")


def _check_replace(value: Any, old: Any = "", new: Any = "", count: Any = None) -> None:
    text, old, new = str(value), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    if len(text) + hits * max(0, len(new) - len(old)) > MAX_VALUE_CHARS:
        refuse(f"replace would build more than {MAX_VALUE_CHARS} characters")


def _check_join(value: Any, d: Any = "", attribute: Any = None) -> None:
    items = list(value) if isinstance(value, Iterable) else []
    total = sum(_length(item) for item in items) + len(str(d)) * max(0, len(items) - 1)
    if total > MAX_VALUE_CHARS:
        refuse(f"join would build more than {MAX_VALUE_CHARS} characters")


def check_format(template: Any, *args: Any, **kwargs: Any) -> None:
    """``"%s" % ...`` and ``|format``: no huge widths, and every ``%`` at most the longest
    argument (``%(a)s`` may use one argument many times)."""
    text = str(template)
    if _FORMAT_WIDTH.search(text):
        refuse("format widths from arguments or of 5 digits and more")
    values: list[Any] = list(args) + list(kwargs.values())
    if len(values) == 1 and isinstance(values[0], dict):
        values = list(values[0].values())
    elif len(values) == 1 and isinstance(values[0], tuple):
        values = list(values[0])
    longest = max((_length(v) for v in values), default=0)
    if len(text) + text.count("%") * longest > MAX_VALUE_CHARS:
        refuse(f"format would build more than {MAX_VALUE_CHARS} characters")


def _check_sum(iterable: Any, attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, int | float):
        refuse("sum of anything but numbers")


def _check_wordwrap(
    s: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None, *_: Any
) -> None:
    _small(width, "width")
    lines = len(str(s)) // max(int(width) if isinstance(width, int) else 1, 1) + 1
    if len(str(s)) + lines * len(str(wrapstring or "")) > MAX_VALUE_CHARS:
        refuse(f"wordwrap would build more than {MAX_VALUE_CHARS} characters")


def _check_indent(s: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    _small(width, "width")
    prefix = width if isinstance(width, int) else len(str(width))
    if len(str(s)) + (str(s).count("\n") + 1) * prefix > MAX_VALUE_CHARS:
        refuse(f"indent would build more than {MAX_VALUE_CHARS} characters")


def _check_tojson(value: Any, indent: Any = None) -> None:
    size = len(indent) if isinstance(indent, str) else indent
    if isinstance(size, int) and size > 8:
        refuse("tojson indent above 8")


def _check_widths(*names: str) -> Callable[..., None]:
    """A check that the arguments called ``names`` (positional after the value) are small."""

    def check(value: Any, *args: Any, **kwargs: Any) -> None:
        for name, arg in zip(names, args, strict=False):
            _small(arg, name)
        for name in names:
            if name in kwargs:
                _small(kwargs[name], name)

    return check


FILTER_CHECKS: Final[dict[str, Callable[..., None]]] = {
    "center": _check_widths("width"),
    "batch": _check_widths("linecount"),
    "slice": _check_widths("slices"),
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "tojson": _check_tojson,
    "replace": _check_replace,
    "join": _check_join,
    "format": check_format,
    "sum": _check_sum,
}


def checked_filter(function: Callable[..., Any], check: Callable[..., None]) -> Callable[..., Any]:
    """``function`` (a Jinja filter), refusing arguments ``check`` finds too costly and
    charging for what it builds. Keeps the filter's pass_context/pass_environment mark."""
    mark = getattr(function, "jinja_pass_arg", None)
    skip = 1 if mark is not None else 0  # the context/environment Jinja passes first

    def run(*args: Any, **kwargs: Any) -> Any:
        if len(args) > skip and isinstance(args[skip], Iterator):
            # A generator (``items|map(...)``) can be read once: the check and the filter
            # both need it.
            args = (*args[:skip], list(args[skip]), *args[skip + 1 :])
        check(*args[skip:], **kwargs)
        return sized(function(*args, **kwargs))

    if mark is not None:
        run.jinja_pass_arg = mark  # type: ignore[attr-defined]
    return run


def checked_range(*args: Any) -> range:
    """``range`` costs its length: ``range(100000)|join`` is as much work as the loop."""
    numbers = safe_range(*args)
    spend(len(numbers))
    return numbers

"""How much work one template render may do: the sandbox keeps templates from reading what
they must not; this keeps them from spending what they must not (CPU time and memory).

A template admin is trusted with content, not with a worker's CPU: ``{% for %}`` nested three
deep over ``range(100000)``, a macro that calls itself twice per level, ``"x" * 99999 ~ ...``
doubled in a loop, ``"x"|center(10**9)``, or ``items|sort`` over a huge list in a loop would
each stall or exhaust a worker. Every render gets a budget of steps: each loop iteration and
each call (filters and tests included) costs one, building a long value costs in proportion to
its length, and an operation that reads a whole value (a filter going through a list, ``==``,
``in``, a method such as ``str.split``, printing a list) costs in proportion to what it reads,
charged before it runs (see :func:`weigh`). Functions that could build a huge value in a
single call are checked before they run, as no step count can interrupt them.
"""

from __future__ import annotations

import re
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    Set,
    ValuesView,
)
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final, NoReturn

from jinja2.exceptions import SecurityError
from jinja2.sandbox import safe_range
from jinja2.utils import Namespace

MAX_STEPS: Final = 50_000  # per rendered field: under 1 s of the slowest step (macro calls)
MAX_VALUE_CHARS: Final = 1_000_000  # any string or list a template builds
# The data of one render, weighed as below: no template could go through more (a step per
# item), and no notification needs that much.
MAX_DATA_ITEMS: Final = MAX_STEPS
_CHARS_PER_STEP: Final = 10_000
_CHARS_PER_ITEM: Final = 100  # a string weighs one item per 100 characters
# A filter's loop spends 1-10 µs of Python on each item, about a step. C compares, copies or
# prints an item in 10-100 ns, but weighing it first (see weigh) takes up to 1 µs.
_ITEMS_PER_STEP_IN_C: Final = 20
_MAX_WIDTH: Final = 10_000  # center/indent/wordwrap/batch/round/... widths and counts

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


def _text_length(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(str(printed(value)))


# -- operations that read a whole value ------------------------------------------------------

_CONTAINERS: Final = (dict, list, tuple, set, frozenset)
# What prints its contents: containers, dict views, namespace(...).
_VIEWS: Final = (KeysView, ValuesView, ItemsView)
_PRINTED_WHOLE: Final = (*_CONTAINERS, *_VIEWS, Namespace)
_LEAVES: Final = frozenset({str, int, float, bool, type(None)})


def weigh(values: Iterable[Any], limit: int) -> int:
    """The items in ``values``: every entry of a list or dict at any depth, and one per 100
    characters of strings. Counted no further than past ``limit``, so that weighing a huge
    value (``[items] * 99999``) costs no more than the budget it would exceed."""
    items = chars = 0
    stack: list[Any] = list(values)
    while stack and items + chars // _CHARS_PER_ITEM <= limit:
        value = stack.pop()
        if isinstance(value, str):
            chars += len(value)
            continue
        if isinstance(value, dict):  # dict's own views: the data's items() would wrap
            children = [*dict.keys(value), *dict.values(value)]
        elif isinstance(value, list):
            children = [*list.__iter__(value)]  # not the data's __iter__, which wraps
        elif isinstance(value, (tuple, set, frozenset, *_VIEWS)):
            children = [*value]
        elif isinstance(value, Namespace):  # its attributes, which `{{ ns }}` prints
            stack.append(object.__getattribute__(value, "_Namespace__attrs"))
            continue
        else:
            items += len(value) if isinstance(value, range) else 0
            continue
        items += len(value)
        # In bulk, item by item only where there is more to see: weighing is itself work.
        chars += sum(len(child) for child in children if type(child) is str)
        stack += [child for child in children if type(child) not in _LEAVES]
    return items + chars // _CHARS_PER_ITEM


def charge(*values: Any, per_step: int = 1) -> None:
    """Spend, before an operation reads ``values``, a step per ``per_step`` items they weigh:
    1 when Python goes through them item by item, _ITEMS_PER_STEP_IN_C when C does."""
    left = _left.get()
    if left is not None:
        spend(weigh(values, (left[0] + 1) * per_step) // per_step)


def compared(value: Any) -> Any:
    """An operand of ``==``, ``<``, ``in``, ...: C compares it item by item, at any depth."""
    if type(value) not in _LEAVES or type(value) is str:  # most operands are numbers
        charge(value, per_step=_ITEMS_PER_STEP_IN_C)
    return value


def searched(value: Any) -> Any:
    """The right of ``in``: a dict or a set is searched by hash, anything else item by item."""
    return value if isinstance(value, Mapping | Set) else compared(value)


def printed(value: Any) -> Any:
    """A value about to become text (``{{ }}``, ``~``, ``%``): a list or dict is refused before
    ``str`` builds a text longer than MAX_VALUE_CHARS, and charged as C prints it."""
    if isinstance(value, _PRINTED_WHOLE) and _left.get() is not None:
        limit = MAX_VALUE_CHARS // _CHARS_PER_ITEM
        weight = weigh([value], limit)
        if weight > limit:
            refuse(f"printing more than {limit} items or {MAX_VALUE_CHARS} characters")
        spend(weight // _ITEMS_PER_STEP_IN_C)
    return value


def too_much_data(data: Mapping[str, Any]) -> bool:
    """Whether a render's data weighs more than MAX_DATA_ITEMS (checked before it starts)."""
    return weigh([data], MAX_DATA_ITEMS) > MAX_DATA_ITEMS


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
    total = sum(_text_length(item) for item in items) + len(str(d)) * max(0, len(items) - 1)
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
    longest = max((_text_length(v) for v in values), default=0)
    if len(text) + text.count("%") * longest > MAX_VALUE_CHARS:
        refuse(f"format would build more than {MAX_VALUE_CHARS} characters")


def _check_sum(iterable: Any, attribute: Any = None, start: Any = 0) -> None:
    if not isinstance(start, int | float):
        refuse("sum of anything but numbers")


def _check_wordwrap(
    s: Any, width: Any = 79, break_long_words: Any = True, wrapstring: Any = None, *_: Any
) -> None:
    _small(width, "width")
    _per_word(1)(s)
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


def _per_word(steps_per_100_chars: int) -> Callable[..., None]:
    """For filters that spend Python on each word: beyond the step per 100 characters every
    filter pays (title and wordwrap ~0.2 µs a character, urlize ~1 µs)."""

    def charge_more(value: Any, *_: Any, **__: Any) -> None:
        spend(len(value) * steps_per_100_chars // 100 if isinstance(value, str) else 0)

    return charge_more


FILTER_CHECKS: Final[dict[str, Callable[..., None]]] = {
    "center": _check_widths("width"),
    "batch": _check_widths("linecount"),
    "slice": _check_widths("slices"),
    "round": _check_widths("precision"),  # 10**precision
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "tojson": _check_tojson,
    "replace": _check_replace,
    "join": _check_join,
    "format": check_format,
    "sum": _check_sum,
    "title": _per_word(1),
    "urlize": _per_word(5),
}

# -- what filters and tests cost -------------------------------------------------------------

# One step whatever they are given.
CONSTANT_FILTERS: Final = frozenset(
    {"abs", "attr", "count", "d", "default", "first", "last", "length", "random", "round"}
)
# Go through their input item by item in Python (a string character by character), looking
# at each item once: a step per item, at the top level.
ITEM_FILTERS: Final = frozenset(
    {"batch", "items", "list", "map", "reject", "rejectattr", "reverse", "select",
     "selectattr", "slice", "sum"}
)  # fmt: skip
# Go through it item by item too, then compare or print whole items (or their attribute) in
# C: also charged as comparisons. Any other filter (tojson, pprint, string, title, ...) reads
# its input whole, in Python: a step per item it weighs.
WHOLE_ITEM_FILTERS: Final = frozenset(
    {"dictsort", "groupby", "join", "max", "min", "sort", "unique"}
)
CONSTANT_TESTS: Final = frozenset(
    {"boolean", "callable", "defined", "escaped", "false", "filter", "float", "integer",
     "iterable", "mapping", "none", "number", "sameas", "sequence", "string", "test", "true",
     "undefined"}
)  # fmt: skip
_MODULO_TESTS: Final = frozenset({"divisibleby", "even", "odd"})  # value % n


def _top_level(value: Any) -> int:
    return len(value) if isinstance(value, (str, range, *_CONTAINERS)) else 0


def cost_of_filter(name: str) -> Callable[..., None]:
    """What the filter ``name`` costs, paid (or refused) before it runs."""
    check = FILTER_CHECKS.get(name)

    def cost(value: Any, *args: Any, **kwargs: Any) -> None:
        spend(1)  # a call
        if name in ITEM_FILTERS or name in WHOLE_ITEM_FILTERS:
            spend(_top_level(value))
            charge(*args, *kwargs.values())
            if name in WHOLE_ITEM_FILTERS:
                compared(value)
        elif name not in CONSTANT_FILTERS:
            charge(value, *args, *kwargs.values())
        if check is not None:
            check(value, *args, **kwargs)

    return cost


def cost_of_test(name: str) -> Callable[..., None]:
    """What the test ``name`` costs: comparing tests (``==``, ``in``, ``lower``, ...) as the
    operators do, paid before it runs."""

    def cost(value: Any, *args: Any, **kwargs: Any) -> None:
        spend(1)  # a call
        if name in CONSTANT_TESTS:
            return
        if name in _MODULO_TESTS:
            if isinstance(value, str):
                check_format(value, *args)  # "%999999999d" is odd
            return
        if name in ("lower", "upper"):
            printed(value)  # str(value).islower()
        compared(value)
        for arg in (*args, *kwargs.values()):
            if name == "in":
                searched(arg)
            else:
                compared(arg)

    return cost


def budgeted(function: Callable[..., Any], cost: Callable[..., None]) -> Callable[..., Any]:
    """``function`` (a Jinja filter or test), paying ``cost`` with its arguments before it runs
    and charging for what it builds. Keeps its pass_context/pass_environment mark."""
    mark = getattr(function, "jinja_pass_arg", None)
    skip = 1 if mark is not None else 0  # the context/environment Jinja passes first

    def run(*args: Any, **kwargs: Any) -> Any:
        if len(args) > skip and isinstance(args[skip], Iterator):
            # A generator (``items|map(...)``) can be read once: the cost and the filter both
            # need it. Making it was paid for by the filter that made it.
            args = (*args[:skip], list(args[skip]), *args[skip + 1 :])
        cost(*args[skip:], **kwargs)
        return sized(function(*args, **kwargs))

    if mark is not None:
        run.jinja_pass_arg = mark  # type: ignore[attr-defined]
    return run


def checked_range(*args: Any) -> range:
    """``range`` costs its length: ``range(100000)|join`` is as much work as the loop."""
    numbers = safe_range(*args)
    spend(len(numbers))
    return numbers

"""Notification templates: validate their shape, pick a locale, render them in a sandbox.

A template's content maps channel -> locale -> field -> Jinja2 source::

    {"email": {"default": {"subject": "Hi {{ name }}", "html": "<p>{{ name }}</p>"},
               "pt-BR": {"subject": "Olá {{ name }}", "text": "..."}},
     "sms": {"default": {"text": "Order {{ order.id }} shipped"}}}

Rendering is strict: a variable the data does not provide is an error naming its dotted
path, so a notification never goes out with a blank where a name should be.
"""

from __future__ import annotations

import functools
import html as html_lib
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from jinja2.visitor import NodeTransformer

from herald.domain import render_budget
from herald.domain.headers import is_single_line

DEFAULT_LOCALE: Final = "default"
MAX_OUTPUT_CHARS: Final = 1_000_000  # per rendered field
_MAX_REPEAT_CHARS: Final = 100_000  # "x" * n and [..] * n
_MAX_EXPONENT: Final = 1_000
_MAX_POWER_BITS: Final = 100_000
_LOCALE_TAG = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")
_SINGLE_LINE: Final = frozenset({"subject", "title"})


class TemplateError(ValueError):
    """A template is malformed or failed to render; ``field`` is its dotted location."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class DataTooLargeError(TemplateError):
    """The data holds more than a render may go through (render_budget.MAX_DATA_ITEMS)."""

    def __init__(self) -> None:
        self.detail = (
            f"holds more than {render_budget.MAX_DATA_ITEMS} values (entries of lists and "
            "objects at any depth; a string counts one per 100 characters)"
        )
        super().__init__(self.detail, "data")


class MissingVariableError(TemplateError):
    """The data lacks a value the template uses; ``variable`` is its dotted path."""

    def __init__(self, field: str, variable: str) -> None:
        super().__init__(f"variable {variable!r} is undefined", field)
        self.variable = variable


@dataclass(frozen=True)
class ChannelFields:
    """The fields a channel's template may have, must have, and needs at least one of."""

    allowed: frozenset[str]
    required: frozenset[str] = frozenset()
    one_of: frozenset[str] = frozenset()


_MESSAGE = ChannelFields(frozenset({"title", "body"}), required=frozenset({"body"}))
CHANNEL_FIELDS: Final[Mapping[str, ChannelFields]] = {
    "email": ChannelFields(
        frozenset({"subject", "text", "html"}),
        required=frozenset({"subject"}),
        one_of=frozenset({"text", "html"}),
    ),
    "sms": ChannelFields(frozenset({"text"}), required=frozenset({"text"})),
    "push": _MESSAGE,
    "webpush": _MESSAGE,
    "inapp": _MESSAGE,
    "apprise": _MESSAGE,
    "webhook": ChannelFields(frozenset({"subject", "text"})),
}


# -- the sandbox -----------------------------------------------------------------------------


class _Missing(UndefinedError):
    def __init__(self, path: str) -> None:
        super().__init__(f"{path!r} is undefined")
        self.path = path


_UNSEEN: Final = object()


class _Data(dict[str, Any]):
    """A mapping from the render data that knows its own dotted path."""

    __slots__ = ("_herald_path", "_herald_seen")  # underscores: the sandbox refuses them

    def __init__(self, path: str, items: Mapping[Any, Any]) -> None:
        super().__init__((str(k), v) for k, v in items.items())
        self._herald_path = path
        self._herald_seen: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        # Children are wrapped (copied) on first access, so deep data costs nothing until it
        # is used, and once: `order.items|length` in a loop must not copy the list each time.
        child = self._herald_seen.get(key, _UNSEEN)
        if child is _UNSEEN:
            child = _wrap(f"{self._herald_path}.{key}", super().__getitem__(key))
            self._herald_seen[key] = child
        return child

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        return ((key, self[key]) for key in self)

    def values(self) -> Iterator[Any]:  # type: ignore[override]
        return (self[key] for key in self)


class _DataList(list[Any]):
    __slots__ = ("_herald_path", "_herald_seen")

    def __init__(self, path: str, items: Collection[Any]) -> None:
        super().__init__(items)
        self._herald_path = path
        self._herald_seen: dict[int, Any] = {}

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, int):
            return super().__getitem__(index)  # a slice
        child = self._herald_seen.get(index, _UNSEEN)
        if child is _UNSEEN:  # wrapped once, as in _Data
            child = _wrap(f"{self._herald_path}[{index}]", super().__getitem__(index))
            self._herald_seen[index] = child
        return child

    def __iter__(self) -> Iterator[Any]:
        # `{% for item in order.items %}{{ item.sku }}` keeps the path order.items[i].sku
        for index in range(len(self)):
            yield self[index]


def _wrap(path: str, value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, _Data):
        return _Data(path, value)
    if isinstance(value, list | tuple) and not isinstance(value, _DataList):
        return _DataList(path, value)
    return value


class _PathUndefined(StrictUndefined):
    """StrictUndefined whose error carries the full dotted path of what was missing."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[Exception] = UndefinedError,
    ) -> None:
        if exc is UndefinedError and hint is None:
            exc = _Missing
        super().__init__(hint, obj, name, exc)  # type: ignore[arg-type]

    @property
    def _undefined_message(self) -> str:
        if self._undefined_exception is not _Missing:
            return str(super()._undefined_message)
        name, obj = self._undefined_name, self._undefined_obj
        if not isinstance(obj, _Data | _DataList):
            return str(name)  # top level, or below a value that is not data (a string, say)
        parent = obj._herald_path
        return f"{parent}[{name}]" if isinstance(name, int) else f"{parent}.{name}"


def _refuse(message: str) -> NoReturn:
    raise SecurityError(message)


class _Sandbox(ImmutableSandboxedEnvironment):
    # Intercepting these also stops Jinja folding `9**9**9` at compile time.
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Every loop counts its iterations, every ``a ~ b`` its length, every comparison and
        ``{{ value }}`` what it reads (see :mod:`herald.domain.render_budget`)."""
        tree = _Metered().visit(super()._parse(source, name, filename))
        assert isinstance(tree, nodes.Template)
        return tree

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        render_budget.spend(1)  # a macro calling itself twice per level is exponential
        if not isinstance(__obj, Macro | LoopContext):
            # A method reads its object (str.split, list.index, the data's items()), any
            # function its arguments (dict(...), loop.changed(...)); a macro or a recursive
            # loop only passes them on.
            render_budget.charge(_receiver(__obj), *args, *kwargs.values())
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "+":
            return render_budget.sized(left + right)
        if operator == "%":
            if isinstance(left, str):
                render_budget.check_format(left, right)
                return render_budget.sized(left % right)
            return left % right
        if operator == "**":
            if isinstance(right, int) and abs(right) > _MAX_EXPONENT:
                _refuse(f"exponent larger than {_MAX_EXPONENT}")
            ints = isinstance(left, int) and isinstance(right, int)
            if ints and left.bit_length() * right > _MAX_POWER_BITS:
                _refuse("power too large")
            return left**right
        ints = isinstance(left, int) and isinstance(right, int)
        if ints and left.bit_length() + right.bit_length() > _MAX_POWER_BITS:
            _refuse("product too large")  # squaring in a loop doubles the size each time
        for seq, times in ((left, right), (right, left)):
            repeat = isinstance(seq, str | list | tuple) and isinstance(times, int)
            if repeat and len(seq) * times > _MAX_REPEAT_CHARS:
                _refuse(f"repetition longer than {_MAX_REPEAT_CHARS}")
        return render_budget.sized(left * right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        allowed = render_budget.STR_METHODS
        if isinstance(obj, str) and attribute not in allowed and hasattr(str, attribute):
            render_budget.refuse(f"str.{attribute} (use the filter of that name)")
        # data keys win over dict methods: {{ order.items }} is the key, not dict.items
        if isinstance(obj, _Data) and dict.__contains__(obj, attribute):
            return obj[attribute]
        if isinstance(obj, _Shadowed) and not attribute.startswith("_"):
            return self.undefined(name=obj._herald_path)  # order.items.x, without order.items
        value = super().getattr(obj, attribute)
        data = isinstance(obj, _Data | _DataList)
        if data and callable(value) and not isinstance(value, StrictUndefined):
            return _Shadowed(value, f"{obj._herald_path}.{attribute}")
        return value

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, _Shadowed):
            return self.undefined(name=obj._herald_path)
        return super().getitem(obj, argument)


def _receiver(function: Any) -> Any:
    """The object a method was taken from (None for a function, or for a dict's get)."""
    if isinstance(function, _Shadowed):
        function = function._herald_function
    if getattr(function, "__name__", None) == "get":
        return None  # one look-up
    return getattr(function, "__self__", None)


class _Shadowed:
    """A function standing where the data lacks a name: ``order.items`` when the order has
    no key ``items``, or the global ``range``. Calling it calls the function; any other use
    (printing, iterating, testing it) is a missing variable, as the name would be without
    the function, so neither a blank nor the data's repr ever reaches a message."""

    __slots__ = ("_herald_function", "_herald_path")  # underscores: the sandbox hides them

    def __init__(self, function: Any, path: str) -> None:
        self._herald_function = function
        self._herald_path = path

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._herald_function(*args, **kwargs)

    def _missing(self, *_: Any) -> NoReturn:
        raise _Missing(self._herald_path)

    __str__ = __repr__ = __iter__ = __bool__ = __len__ = _missing


# What _Metered wraps expressions in: filters under names no template can write (a filter's
# name is an identifier), so that they compile to a plain call, not one through the sandbox.
_METERS: Final = {
    "herald:counted": render_budget.counted,
    "herald:sized": render_budget.sized,
    "herald:compared": render_budget.compared,
    "herald:searched": render_budget.searched,
    "herald:printed": render_budget.printed,
}


class _Metered(NodeTransformer):
    """Wraps loops' iterables, concatenations, slices, comparisons and printed values in the
    meters of the render budget."""

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = _meter("herald:counted", node.iter)
        return node

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        if isinstance(node.arg, nodes.Slice) and node.ctx == "load":
            # Compiled to a plain `value[a:b]`, not through getitem: a copy, charged as built.
            return _meter("herald:sized", node)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        node.nodes = [_meter("herald:printed", child) for child in node.nodes]
        return _meter("herald:sized", node)

    def visit_Compare(self, node: nodes.Compare) -> nodes.Compare:
        self.generic_visit(node)
        node.expr = _meter("herald:compared", node.expr)
        for operand in node.ops:
            meter = "herald:searched" if operand.op in ("in", "notin") else "herald:compared"
            operand.expr = _meter(meter, operand.expr)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Output:
        self.generic_visit(node)
        node.nodes = [
            child
            if isinstance(child, nodes.TemplateData | nodes.Const)
            else _meter("herald:printed", child)
            for child in node.nodes
        ]
        return node


def _meter(name: str, expression: nodes.Node) -> nodes.Filter:
    return nodes.Filter(expression, name, [], [], None, None)


def _environment(autoescape: bool) -> _Sandbox:
    env = _Sandbox(autoescape=autoescape, undefined=_PathUndefined, auto_reload=False)
    del env.globals["lipsum"]  # lipsum(n) writes n paragraphs; no message needs it
    env.globals["range"] = render_budget.checked_range
    env.globals.update({name: _Shadowed(f, name) for name, f in env.globals.items()})
    for name, function in list(env.filters.items()):
        env.filters[name] = render_budget.budgeted(function, render_budget.cost_of_filter(name))
    tests: dict[str, Callable[..., Any]] = env.tests  # type: ignore[assignment]
    for name, function in list(tests.items()):
        tests[name] = render_budget.budgeted(function, render_budget.cost_of_test(name))
    env.filters.update(_METERS)
    return env


_TEXT_ENV: Final = _environment(autoescape=False)
_HTML_ENV: Final = _environment(autoescape=True)


@functools.lru_cache(maxsize=1024)
def _compile(source: str, html: bool) -> Template:
    return (_HTML_ENV if html else _TEXT_ENV).from_string(source)


def _compiled(source: str, field: str, html: bool) -> Template:
    try:
        return _compile(source, html)
    except TemplateSyntaxError as error:
        raise TemplateError(f"line {error.lineno}: {error.message}", field) from None
    except Exception as error:  # e.g. RecursionError on absurdly nested expressions
        raise TemplateError(f"cannot compile: {error}", field) from None


# -- definitions -----------------------------------------------------------------------------


def _normalise_locale(tag: str) -> str:
    return tag.replace("_", "-").lower()


def check_definition(channels: Any) -> None:
    """Raise :class:`TemplateError` unless ``channels`` is a usable template definition."""
    if not isinstance(channels, Mapping) or not channels:
        raise TemplateError("must be a non-empty object of channels", "channels")
    for channel, locales in channels.items():
        where = f"channels.{channel}"
        rules = CHANNEL_FIELDS.get(channel) if isinstance(channel, str) else None
        if rules is None:
            known = ", ".join(sorted(CHANNEL_FIELDS))
            raise TemplateError(f"unknown channel (known: {known})", where)
        if not isinstance(locales, Mapping) or DEFAULT_LOCALE not in locales:
            raise TemplateError(f"needs a {DEFAULT_LOCALE!r} locale", where)
        seen: dict[str, str] = {}
        for locale, fields in locales.items():
            _check_locale(locale, seen, where)
            _check_fields(rules, fields, f"{where}.{locale}")


def _check_locale(locale: Any, seen: dict[str, str], where: str) -> None:
    if not isinstance(locale, str) or not _LOCALE_TAG.fullmatch(locale):
        raise TemplateError(f"invalid locale {locale!r} (use tags like 'en' or 'pt-BR')", where)
    key = _normalise_locale(locale)
    if key in seen:
        raise TemplateError(f"locales {seen[key]!r} and {locale!r} are the same", where)
    seen[key] = locale


def _check_fields(rules: ChannelFields, fields: Any, where: str) -> None:
    if not isinstance(fields, Mapping):
        raise TemplateError("must be an object of fields", where)
    unknown = set(fields) - rules.allowed
    if unknown:
        allowed = ", ".join(sorted(rules.allowed))
        raise TemplateError(f"unknown field {sorted(map(str, unknown))[0]!r} "
                            f"(allowed: {allowed})", where)  # fmt: skip
    missing_fields = sorted(rules.required - set(fields))
    if missing_fields:
        raise TemplateError(f"missing required field {missing_fields[0]!r}", where)
    if rules.one_of and not rules.one_of & set(fields):
        raise TemplateError(f"needs at least one of {', '.join(sorted(rules.one_of))}", where)
    for name, source in fields.items():
        if not isinstance(source, str):
            raise TemplateError("must be a string", f"{where}.{name}")
        _compiled(source, f"{where}.{name}", html=name == "html")
        if name in _SINGLE_LINE:
            _check_single_line(source, f"{where}.{name}")


def _check_single_line(source: str, field: str) -> None:
    """Refuse a subject whose own text (not what data fills in) has a line break or NUL."""
    try:
        tree = _TEXT_ENV.parse(source)
    except Exception as error:  # it compiled, so this is not expected; fail the same way
        raise TemplateError(f"cannot compile: {error}", field) from None
    for text in tree.find_all(nodes.TemplateData):
        if not is_single_line(text.data):
            raise TemplateError("must be a single line (no line breaks or NUL)", field)


def pick_locale(available: Collection[str], wanted: str | None) -> str:
    """The best of ``available`` for ``wanted``: ``pt-BR``, then ``pt``, then ``default``."""
    by_key = {_normalise_locale(tag): tag for tag in available}
    tag = _normalise_locale(wanted.strip()) if wanted else ""
    while tag:
        if tag in by_key:
            return by_key[tag]
        tag = tag.rpartition("-")[0]
    if DEFAULT_LOCALE in available:
        return DEFAULT_LOCALE
    raise TemplateError(f"no {DEFAULT_LOCALE!r} locale to fall back to", "locale")


# -- rendering -------------------------------------------------------------------------------


def render(
    fields: Mapping[str, str], data: Mapping[str, Any], *, where: str = ""
) -> dict[str, str]:
    """Render every field over ``data``; errors name ``where`` + the field ("channels.sms.en"),
    or ``data`` when there is more of it than a render may go through."""
    if render_budget.too_much_data(data):
        raise DataTooLargeError()
    context = {str(k): _wrap(str(k), v) for k, v in data.items()}
    rendered: dict[str, str] = {}
    for name, source in fields.items():
        location = f"{where}.{name}" if where else name
        template = _compiled(source, location, html=name == "html")
        try:
            text = _render_within_budget(template, context)
        except _Missing as error:
            raise MissingVariableError(location, error.path) from None
        except SecurityError as error:
            raise TemplateError(f"not allowed: {error}", location) from None
        except Exception as error:  # a template is code: any failure is the template's fault
            raise TemplateError(f"{type(error).__name__}: {error}", location) from None
        if name in _SINGLE_LINE and not is_single_line(text):
            # a line break in a subject would let data inject e-mail headers
            raise TemplateError("must render to a single line (no line breaks or NUL)", location)
        rendered[name] = text
    return rendered


def _render_within_budget(template: Template, context: Mapping[str, Any]) -> str:
    """Streamed, so that output past the limit stops the render instead of piling up."""
    chunks, size = [], 0
    with render_budget.budget():
        for chunk in template.generate(context):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise SecurityError(f"renders to more than {MAX_OUTPUT_CHARS} characters")
            chunks.append(chunk)
    return "".join(chunks)


_BLOCKS = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BREAKS = re.compile(r"<\s*(br|/p|/div|/h[1-6]|/li|/tr)\b[^>]*>", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]*>")


def html_to_text(markup: str) -> str:
    """A crude plain-text version of an HTML body, for clients that cannot show HTML."""
    text = _TAGS.sub("", _BREAKS.sub("\n", _BLOCKS.sub("", markup)))
    lines = (" ".join(line.split()) for line in html_lib.unescape(text).splitlines())
    return "\n".join(line for line in lines if line)


def to_content(channel: str, rendered: Mapping[str, str]) -> tuple[str | None, str, str | None]:
    """``(subject, body, html)`` from rendered fields, whatever the channel calls them."""
    if channel not in CHANNEL_FIELDS:
        raise TemplateError("unknown channel", f"channels.{channel}")
    subject = rendered.get("subject", rendered.get("title"))
    html = rendered.get("html")
    body = rendered.get("text", rendered.get("body"))
    if body is None:
        body = html_to_text(html) if html is not None else ""
    return subject, body, html

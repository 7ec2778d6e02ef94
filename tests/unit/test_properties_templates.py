"""Properties of template rendering (herald.domain.templates): strict variables that name
their path, autoescaping in the html part only, single-line subjects, and a sandbox whose
only failure is the module's own TemplateError."""

from __future__ import annotations

import copy
import html
import keyword
from typing import Any

import markupsafe
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.domain.headers import is_single_line
from herald.domain.templates import (
    DEFAULT_LOCALE,
    MissingVariableError,
    TemplateError,
    check_definition,
    html_to_text,
    pick_locale,
    render,
    to_content,
)

PROPERTY = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Each example of these compiles a new template: fewer of them.
COMPILING = settings(PROPERTY, max_examples=50)

# Names a template cannot use for data: Jinja's keywords and special names, Python's
# keywords, and the dict methods that change a dict (the sandbox refuses those outright).
RESERVED = frozenset(
    {
        "true", "false", "none", "and", "or", "not", "in", "is", "if", "else", "elif",
        "endif", "for", "endfor", "block", "set", "with", "self", "loop", "caller",
        "varargs", "kwargs", "super", "import", "include", "from", "as", "recursive",
        "macro", "call", "filter", "raw", "extends", "pop", "popitem", "clear", "update",
        "setdefault",
    }
    | set(keyword.kwlist)
)  # fmt: skip
GLOBALS = ("range", "dict", "lipsum", "cycler", "joiner", "namespace")
identifiers = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True).filter(
    lambda name: name not in RESERVED and name not in GLOBALS
)
# Keys that are also names of dict methods: the data's key must win, and its absence must
# still be reported as a missing variable (not print, say, "<bound method items>").
keys = identifiers | st.sampled_from(["items", "get", "keys", "values", "copy"])

leaves = (
    st.text(max_size=8)
    | st.integers(-(10**18), 10**18)
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
)
shapes = st.recursive(
    leaves,
    lambda inner: (
        st.dictionaries(keys, inner, min_size=1, max_size=3)
        | st.lists(inner, min_size=1, max_size=3)
    ),
    max_leaves=10,
)
datasets = st.dictionaries(identifiers, shapes, min_size=1, max_size=4)

Segment = str | int


def path_text(path: tuple[Segment, ...]) -> str:
    return "".join(
        f"[{s}]" if isinstance(s, int) else (s if i == 0 else f".{s}") for i, s in enumerate(path)
    )


def leaves_of(value: Any, path: tuple[Segment, ...] = ()) -> list[tuple[tuple[Segment, ...], Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in leaves_of(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in leaves_of(v, (*path, i))]
    return [(path, value)]


def keys_of(value: Any, path: tuple[Segment, ...] = ()) -> list[tuple[Segment, ...]]:
    """The path of every dict key, at any depth: each one can be taken out of the data."""
    found: list[tuple[Segment, ...]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += [(*path, k), *keys_of(v, (*path, k))]
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += keys_of(v, (*path, i))
    return found


def without(data: dict[str, Any], path: tuple[Segment, ...]) -> dict[str, Any]:
    smaller = copy.deepcopy(data)
    parent: Any = smaller
    for segment in path[:-1]:
        parent = parent[segment]
    del parent[path[-1]]
    return smaller


def attempt(fields: dict[str, str], data: dict[str, Any], where: str = "") -> Any:
    """What render() gave: the rendered fields, or the TemplateError it raised."""
    try:
        return render(fields, data, where=where)
    except TemplateError as error:
        return error


def source_for(data: dict[str, Any]) -> tuple[str, list[Any]]:
    """A template printing every leaf of ``data``, and the leaves in the order printed."""
    found = leaves_of(data)
    return "|".join(f"{{{{ {path_text(p)} }}}}" for p, _ in found), [v for _, v in found]


# -- strict variables ------------------------------------------------------------------------


@COMPILING
@given(datasets)
def test_data_with_every_variable_renders_each_value(data: dict[str, Any]) -> None:
    source, values = source_for(data)
    out = render({"text": source, "html": source}, data)
    assert out["text"] == "|".join(str(v) for v in values)
    assert out["html"] == "|".join(str(markupsafe.escape(v)) for v in values)


@COMPILING
@given(datasets, st.data())
def test_taking_out_any_variable_is_an_error_naming_its_path(
    data: dict[str, Any], draw: st.DataObject
) -> None:
    source, _ = source_for(data)
    removed = draw.draw(st.sampled_from(keys_of(data)), label="removed")
    for name in ("text", "html"):
        error = attempt({name: source}, without(data, removed), where="channels.email.default")
        assert isinstance(error, MissingVariableError), error
        assert error.variable == path_text(removed)  # the API reports data.<variable>
        assert error.field == f"channels.email.default.{name}"


@PROPERTY
@given(st.sampled_from(GLOBALS), st.sampled_from(["{{ %s }}", "{{ %s | string }}"]))
def test_a_missing_variable_named_like_a_global_is_missing(name: str, pattern: str) -> None:
    error = attempt({"text": pattern % name}, {})
    assert isinstance(error, MissingVariableError), error
    assert error.variable == name
    assert render({"text": pattern % name}, {name: "v"}) == {"text": "v"}


# -- escaping and single lines ---------------------------------------------------------------


@PROPERTY
@given(st.text(), st.text(alphabet="<>&\"'abc/ =", max_size=20))
def test_html_escapes_any_string_and_text_keeps_it(value: str, markup_ish: str) -> None:
    for v in (value, markup_ish):
        out = render(
            {"text": "{{ v }}", "html": '<p title="{{ v }}">{{ v }}</p>'}, {"v": v, "w": [v]}
        )
        assert out["text"] == v
        inside = out["html"].removeprefix('<p title="').removesuffix("</p>")
        attribute, _, body = inside.partition('">')
        for part in (attribute, body):
            assert not set(part) & set("<>\"'"), part
            assert html.unescape(part) == v
        nested = render({"html": "{{ w[0] }}{{ w }}"}, {"w": [v]})["html"]
        assert "<" not in nested


@PROPERTY
@given(st.text(max_size=20), st.sampled_from(["subject", "title"]))
def test_a_rendered_subject_is_one_line_or_an_error(value: str, name: str) -> None:
    out = attempt({name: "{{ v }}"}, {"v": value})
    if is_single_line(value):
        assert out == {name: value}
    else:
        assert isinstance(out, TemplateError)
        assert out.field == name


@PROPERTY
@given(st.text(max_size=20).filter(lambda s: "{" not in s))
def test_a_subject_definition_is_refused_exactly_when_its_text_would_be(text: str) -> None:
    definition = {"email": {"default": {"subject": text, "text": "x"}}}
    renders = not isinstance(attempt({"subject": text}, {}), TemplateError)
    if renders:
        check_definition(definition)
    else:
        with pytest.raises(TemplateError) as info:
            check_definition(definition)
        assert info.value.field == "channels.email.default.subject"


# -- arbitrary sources: the module's own error, or output --------------------------------------

SNIPPETS = [
    "Hi ", "{{ name }}", "{{ order.id }}", "{{ order.lines[0].sku }}", "{{ order.items }}",
    "{{ order.items() | list }}", "{{ order.get('id') }}", "{{ order.keys }}", "{{ range }}",
    "{{ lipsum }}", "{{ dict }}", "{{ namespace }}", "{{ cycler }}", "{{ self }}",
    "{{ loop }}", "{% for i in range(3) %}", "{% endfor %}", "{% if name %}", "{% else %}",
    "{% endif %}", "{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}",
    "{{ order.update({}) }}", "{{ order.lines.append(1) }}", "{{ order._herald_path }}",
    "{{ order | attr('__class__') }}", "{{ order | map(attribute='__class__') | list }}",
    "{{ '{0.__class__}'.format(name) }}", "{{ name.format_map(order) }}", "{{ ''.join }}",
    "{{ '%s' | format(order) }}", "{{ order | tojson }}", "{{ order | pprint }}",
    "{{ order | xmlattr }}", "{{ name | int(base=99) }}", "{{ 'x' * n }}", "{{ n ** n }}",
    "{{ 1 / 0 }}", "{% include 'x' %}", "{% extends 'x' %}", "{% import 'x' as y %}",
    "{% macro m() %}m{% endmacro %}", "{{ m }}", "{{ m() }}", "{% call m() %}c{% endcall %}",
    "{% set ns = namespace(a=1) %}", "{% set ns.a = 2 %}", "{{ ns.a }}",
    "{% filter upper %}", "{% endfilter %}", "{% with a = 1 %}{{ a }}{% endwith %}",
    "{% raw %}{{ x }}{% endraw %}", "{{ name is number }}", "{# c #}", "{{", "}}", "{%",
    "%}", "<b>", "\n", "\r\n", "\u2028", "\x00", "{{ self._TemplateReference__context }}",
]  # fmt: skip
sources = st.lists(st.sampled_from(SNIPPETS), max_size=10).map("".join) | st.text(max_size=40)
render_data = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=5) | st.integers(-5, 5),
        "n": st.integers(-3, 40),
        "order": st.fixed_dictionaries(
            {},
            optional={
                "id": st.text(max_size=3),
                "lines": st.lists(st.fixed_dictionaries({"sku": st.text(max_size=2)}), max_size=2),
            },
        ),
    },
)


@PROPERTY
@given(
    st.dictionaries(st.sampled_from(["subject", "text", "html", "title"]), sources, min_size=1),
    render_data,
)
def test_any_source_renders_or_raises_a_template_error(
    fields: dict[str, str], data: dict[str, Any]
) -> None:
    out = attempt(fields, data)
    if isinstance(out, TemplateError):
        assert out.field in fields
        return
    assert set(out) == set(fields)
    for text in out.values():
        assert "<bound method" not in text  # a method of the data: its repr shows the data
        assert "<function" not in text


definitions = st.recursive(
    st.text(max_size=10) | st.sampled_from(list(SNIPPETS)) | st.integers() | st.none(),
    lambda inner: st.dictionaries(
        st.sampled_from(
            ["email", "sms", "push", "default", "pt-BR", "en_US", "x y", "subject", "text",
             "html", "title", "body"]
        ),
        inner,
        max_size=4,
    ),
    max_leaves=12,
)  # fmt: skip


@PROPERTY
@given(definitions)
def test_any_definition_is_accepted_or_a_template_error(channels: Any) -> None:
    try:
        check_definition(channels)
    except TemplateError as error:
        field = error.field
    else:
        return
    assert field.startswith("channels")


@PROPERTY
@given(
    st.sets(st.from_regex(r"[a-z]{2}(-[A-Z]{2})?", fullmatch=True), max_size=4),
    st.none() | st.text(max_size=12),
)
def test_pick_locale_returns_an_available_locale(available: set[str], wanted: str | None) -> None:
    chosen = pick_locale({*available, DEFAULT_LOCALE}, wanted)
    assert chosen in {*available, DEFAULT_LOCALE}
    if wanted in available:
        assert chosen == wanted


@PROPERTY
@given(st.text(max_size=60), st.sampled_from(["email", "push", "sms", "webhook"]))
def test_content_and_plain_text_never_fail(markup: str, channel: str) -> None:
    text = html_to_text(markup)
    assert all(line and line == line.strip() for line in text.split("\n")) or text == ""
    subject, body, html_part = to_content(channel, {"html": markup})
    assert (subject, html_part) == (None, markup)
    assert body == text

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.domain.templates import (
    CHANNEL_FIELDS,
    MissingVariableError,
    TemplateError,
    check_definition,
    html_to_text,
    pick_locale,
    render,
    to_content,
)

VALID: dict[str, Any] = {
    "email": {
        "default": {"subject": "Hi {{ name }}", "text": "Hello {{ name }}", "html": "<p>Hi</p>"},
        "pt-BR": {"subject": "Olá {{ name }}", "html": "<p>Olá {{ name }}</p>"},
        "en": {"subject": "Hi", "text": "Hello"},
    },
    "sms": {"default": {"text": "Order {{ order.id }} shipped"}},
    "push": {"default": {"title": "Shipped", "body": "{{ order.id }}"}},
    "webpush": {"default": {"body": "x"}},
    "inapp": {"default": {"body": "x"}},
    "apprise": {"default": {"title": "t", "body": "x"}},
    "webhook": {"default": {}},
}


# -- definitions -----------------------------------------------------------------------------


def test_a_valid_definition_passes() -> None:
    check_definition(VALID)


def test_channel_fields_describe_every_channel() -> None:
    assert set(CHANNEL_FIELDS) == {
        "email", "sms", "push", "webpush", "inapp", "apprise", "webhook",
    }  # fmt: skip
    assert CHANNEL_FIELDS["email"].allowed == {"subject", "text", "html"}
    assert CHANNEL_FIELDS["email"].required == {"subject"}
    assert CHANNEL_FIELDS["email"].one_of == {"text", "html"}
    assert CHANNEL_FIELDS["sms"].required == {"text"}
    assert CHANNEL_FIELDS["push"].required == {"body"}
    assert not CHANNEL_FIELDS["webhook"].required


@pytest.mark.parametrize(
    ("channels", "field", "fragment"),
    [
        ({}, "channels", "non-empty"),
        ([], "channels", "non-empty"),
        ({"fax": {"default": {"text": "x"}}}, "channels.fax", "unknown channel"),
        ({"sms": {"en": {"text": "x"}}}, "channels.sms", "'default' locale"),
        ({"sms": "text"}, "channels.sms", "'default' locale"),
        ({"sms": {"default": {"text": "x"}, "en US": {"text": "x"}}}, "channels.sms", "locale"),
        ({"sms": {"default": {"text": "x"}, "e": {"text": "x"}}}, "channels.sms", "locale"),
        (
            {"sms": {"default": {"text": "x"}, "pt-BR": {"text": "x"}, "pt_br": {"text": "y"}}},
            "channels.sms",
            "are the same",
        ),
        ({"sms": {"default": "x"}}, "channels.sms.default", "object of fields"),
        ({"sms": {"default": {"text": "x", "html": "y"}}}, "channels.sms.default", "'html'"),
        ({"sms": {"default": {}}}, "channels.sms.default", "required field 'text'"),
        ({"email": {"default": {"text": "x"}}}, "channels.email.default", "'subject'"),
        ({"email": {"default": {"subject": "x"}}}, "channels.email.default", "html, text"),
        ({"push": {"default": {"title": "x"}}}, "channels.push.default", "'body'"),
        ({"sms": {"default": {"text": 5}}}, "channels.sms.default.text", "string"),
        (
            {"email": {"default": {"subject": "x", "text": "a"}, "pt-BR": {"subject": "{{ x"}}},
            "channels.email.pt-BR",
            "needs at least one",
        ),
    ],
)
def test_invalid_definitions_name_the_field(channels: Any, field: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as info:
        check_definition(channels)
    assert info.value.field == field
    assert fragment in str(info.value)


def test_syntax_errors_name_the_field_and_line() -> None:
    channels = {"email": {"default": {"subject": "ok", "html": "<p>\n\n{{ x }</p>"}}}
    with pytest.raises(TemplateError) as info:
        check_definition(channels)
    assert info.value.field == "channels.email.default.html"
    assert "line 3" in str(info.value)


def test_unknown_filters_are_caught_when_checking() -> None:
    with pytest.raises(TemplateError, match="line 1") as info:
        check_definition({"sms": {"default": {"text": "{{ x | nosuchfilter }}"}}})
    assert info.value.field == "channels.sms.default.text"


# -- locales ---------------------------------------------------------------------------------

LOCALES = ["default", "pt-BR", "pt", "en", "zh-Hant-TW"]


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("pt-BR", "pt-BR"),
        ("pt-br", "pt-BR"),
        ("PT_BR", "pt-BR"),
        ("pt-PT", "pt"),
        ("pt", "pt"),
        ("pt-BR-x-foo", "pt-BR"),
        ("en-GB", "en"),
        ("zh-Hant-TW", "zh-Hant-TW"),
        ("zh-Hant", "default"),
        ("fr-FR", "default"),
        ("", "default"),
        (None, "default"),
        (" en ", "en"),
    ],
)
def test_locale_fallback_chain(wanted: str | None, expected: str) -> None:
    assert pick_locale(LOCALES, wanted) == expected


def test_pick_locale_needs_a_default_to_fall_back_to() -> None:
    assert pick_locale(["en"], "en-US") == "en"
    with pytest.raises(TemplateError, match="default"):
        pick_locale(["en"], "fr")


# -- rendering -------------------------------------------------------------------------------


def test_render_every_field() -> None:
    fields = {"subject": "Hi {{ name }}", "text": "Total {{ order.total }}"}
    out = render(fields, {"name": "Ann", "order": {"total": 9.5}})
    assert out == {"subject": "Hi Ann", "text": "Total 9.5"}


@pytest.mark.parametrize(
    ("source", "data", "variable"),
    [
        ("{{ name }}", {}, "name"),
        ("{{ order.id }}", {"order": {}}, "order.id"),
        ("{{ order['id'] }}", {"order": {}}, "order.id"),
        ("{{ order.customer.name }}", {"order": {}}, "order.customer"),
        ("{{ order.customer.name }}", {"order": {"customer": {}}}, "order.customer.name"),
        ("{{ order.lines[2] }}", {"order": {"lines": [1]}}, "order.lines[2]"),
        ("{{ order.lines[0].sku }}", {"order": {"lines": [{}]}}, "order.lines[0].sku"),
        (
            "{% for line in order.lines %}{{ line.sku }}{% endfor %}",
            {"order": {"lines": [{"sku": 1}, {}]}},
            "order.lines[1].sku",
        ),
        ("{% for k, v in o.items() %}{{ v.x }}{% endfor %}", {"o": {"a": {}}}, "o.a.x"),
        ("{{ name ~ '!' }}", {}, "name"),
        ("{% if flag %}x{% endif %}", {}, "flag"),
        ("{{ missing() }}", {}, "missing"),
        # names that are also dict methods or globals: missing, not "<bound method ...>"
        ("{{ order.items }}", {"order": {}}, "order.items"),
        ("{{ order.get | string }}", {"order": {"id": "secret"}}, "order.get"),
        ("{{ order.keys.first }}", {"order": {}}, "order.keys"),
        ("{% for x in order.values %}{% endfor %}", {"order": {}}, "order.values"),
        ("{{ range }}", {}, "range"),
        ("{{ namespace ~ '' }}", {}, "namespace"),
    ],
)
def test_missing_variables_name_the_full_path(
    source: str, data: dict[str, Any], variable: str
) -> None:
    with pytest.raises(MissingVariableError) as info:
        render({"text": source}, data)
    assert info.value.variable == variable
    assert info.value.field == "text"
    assert variable in str(info.value)


def test_missing_variable_in_html_and_with_a_location() -> None:
    with pytest.raises(MissingVariableError) as info:
        render({"html": "<p>{{ user.name }}</p>"}, {"user": {}}, where="channels.email.en")
    assert info.value.variable == "user.name"
    assert info.value.field == "channels.email.en.html"


def test_defined_test_and_default_filter_still_work() -> None:
    source = (
        "{% if nick is defined %}{{ nick }}{% else %}anon{% endif %}"
        "|{{ title | default('friend') }}|{{ order.ref | default('none') }}"
        "|{% if order.ref is defined %}has{% else %}no{% endif %}"
    )
    assert render({"text": source}, {"order": {}}) == {"text": "anon|friend|none|no"}
    assert render({"text": source}, {"nick": "N", "title": "T", "order": {"ref": 1}}) == {
        "text": "N|T|1|has"
    }


def test_html_is_escaped_only_in_the_html_field() -> None:
    data = {"name": "<script>alert(1)</script>"}
    fields = {"subject": "{{ name }}", "text": "{{ name }}", "html": "<p>{{ name }}</p>"}
    out = render(fields, data)
    assert out["html"] == "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert out["text"] == out["subject"] == data["name"]
    assert render({"html": "{{ name | safe }}"}, data)["html"] == data["name"]


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ name.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ order.update({'a': 1}) }}",
        "{{ order.lines.append(1) }}",
        "{{ order._herald_path }}",
        "{{ '{0.__class__}'.format(name) }}",
    ],
)
def test_sandbox_blocks_unsafe_access(source: str) -> None:
    with pytest.raises(TemplateError, match="not allowed") as info:
        render({"text": source}, {"name": "x", "order": {"lines": []}})
    assert not isinstance(info.value, MissingVariableError)


@pytest.mark.parametrize(
    "source",
    ["{{ 'x' * 10000000 }}", "{{ [1] * 10000000 }}", "{{ 2 ** 100000 }}", "{{ 99 ** 999 ** 999 }}"],
)
def test_huge_values_are_refused(source: str) -> None:
    with pytest.raises(TemplateError, match="not allowed"):
        render({"text": source}, {})


def test_huge_operators_are_not_folded_when_checking() -> None:
    check_definition({"sms": {"default": {"text": "{{ 9 ** 9 ** 9 ** 9 }}"}}})


def test_small_arithmetic_still_works() -> None:
    assert render({"text": "{{ 'ab' * 2 }} {{ 2 ** 10 }} {{ 3 * 4 }}"}, {}) == {
        "text": "abab 1024 12"
    }


def test_data_keys_win_over_dict_methods() -> None:
    data = {"order": {"items": [{"sku": "A"}], "values": 3}}
    out = render({"text": "{{ order.items[0].sku }} {{ order.values }}"}, data)
    assert out == {"text": "A 3"}


def test_other_errors_name_the_field() -> None:
    with pytest.raises(TemplateError) as info:
        render({"subject": "ok", "text": "{{ 1 / 0 }}"}, {})
    assert info.value.field == "text"
    assert "ZeroDivisionError" in str(info.value)
    with pytest.raises(TemplateError, match="line 2"):
        render({"text": "a\n{{ x }"}, {})


@pytest.mark.parametrize("name", ["subject", "title"])
@pytest.mark.parametrize("value", ["a\r\nBcc: evil@example.com", "a\nb", "a\rb"])
def test_line_breaks_in_a_rendered_subject_are_refused(name: str, value: str) -> None:
    with pytest.raises(TemplateError, match="single line") as info:
        render({name: "Hi {{ who }}"}, {"who": value})
    assert info.value.field == name
    assert render({"text": "{{ who }}"}, {"who": value}) == {"text": value}


def test_a_trailing_newline_in_the_subject_source_is_dropped() -> None:
    assert render({"subject": "Hi\n"}, {}) == {"subject": "Hi"}


# -- content ---------------------------------------------------------------------------------


def test_to_content() -> None:
    assert to_content("email", {"subject": "S", "text": "T", "html": "<b>H</b>"}) == (
        "S",
        "T",
        "<b>H</b>",
    )
    assert to_content("push", {"title": "S", "body": "B"}) == ("S", "B", None)
    assert to_content("sms", {"text": "B"}) == (None, "B", None)
    assert to_content("webhook", {}) == (None, "", None)
    subject, body, html = to_content("email", {"subject": "S", "html": "<p>Hi &amp; bye</p>"})
    assert (subject, body, html) == ("S", "Hi & bye", "<p>Hi &amp; bye</p>")
    with pytest.raises(TemplateError):
        to_content("fax", {"text": "x"})


def test_html_to_text_is_crude_but_readable() -> None:
    markup = (
        "<html><head><style>p {color: red}</style><script>x()</script></head>"
        "<body><h1>Title</h1><p>Hello <b>Ann</b>,</p><p>line<br>two &lt;3</p></body></html>"
    )
    assert html_to_text(markup) == "Title\nHello Ann,\nline\ntwo <3"


# -- properties ------------------------------------------------------------------------------

SNIPPETS = [
    "Hi ", "{{ name }}", "{{ order.id }}", "{{ order.lines[0].sku }}", "{{ x | default('y') }}",
    "{% if x is defined %}", "{% if name %}", "{% else %}", "{% endif %}",
    "{% for l in order.lines %}", "{{ l.sku }}", "{% endfor %}", "{{ ''.__class__ }}",
    "{{ 1 / 0 }}", "{{ name | upper }}", "{{ name + 1 }}", "{{ 'a' * n }}", "{{ n ** n }}",
    "{{ order | tojson }}", "{{ name[0] }}", "{{ x.y.z }}", "{{", "}}", "{%", "%}", "<b>", "\n",
    "{{ name | int }}", "{{ range(n) | list }}", "{{ order.items() | list }}", "{# c #}",
]  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["id", "lines", "sku", "y"]), inner, max_size=3)
    ),
    max_leaves=12,
)
data_strategy = st.dictionaries(
    st.sampled_from(["name", "order", "x", "n", "l"]), json_values, max_size=5
)


@settings(max_examples=200, deadline=None)
@given(
    sources=st.dictionaries(
        st.sampled_from(["subject", "text", "html", "title"]),
        st.lists(st.sampled_from(SNIPPETS), max_size=8).map("".join),
        min_size=1,
    ),
    data=data_strategy,
)
def test_render_raises_only_template_errors(sources: dict[str, str], data: dict[str, Any]) -> None:
    try:
        out = render(sources, data)
    except TemplateError as error:
        field = error.field
    else:
        assert set(out) == set(sources)
        return
    assert field in sources

"""Templates that would stall or exhaust a worker are refused, not rendered (render_budget)."""

from __future__ import annotations

from typing import Any

import pytest

from herald.domain.render_budget import MAX_STEPS
from herald.domain.templates import MissingVariableError, TemplateError, render

BIG = '{% set a = "x" * 99999 %}'  # as long as one repetition may be

HOSTILE = {
    "nested loops": "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
    "loops over data": "{% for a in items %}{% for b in items %}{% for c in items %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "exponential macro": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
    "{% endmacro %}{{ f(40) }}",
    "doubling with ~": BIG + "{% set b = a ~ a %}{% set c = b ~ b %}{% set d = c ~ c %}"
    "{% set e = d ~ d %}{% set f = e ~ e %}{{ f|length }}",
    "doubling with +": BIG + "{% set b = a + a %}{% set c = b + b %}{% set d = c + c %}"
    "{% set e = d + d %}{% set f = e + e %}{{ f|length }}",
    "growing in a loop": '{% set ns = namespace(s="") %}{% for i in range(100000) %}'
    '{% set ns.s = ns.s ~ "xxxxxxxxxx" %}{% endfor %}{{ ns.s|length }}',
    "output in a loop": BIG + "{% for i in range(100) %}{{ a }}{% endfor %}",
    "center filter": '{{ "x"|center(1000000000) }}',
    "str.center": '{{ "x".center(1000000000) }}',
    "str.zfill": '{{ "1".zfill(1000000000) }}',
    "str.format": '{{ "{:>1000000000}".format(1) }}',
    "replace filter": BIG + '{{ a|replace("x", a) }}',
    "replace everywhere": BIG + '{{ a|replace("", a) }}',
    "join filter": BIG + "{{ [a, a, a, a, a, a, a, a, a, a, a]|join }}",
    "join of a generator": BIG + "{{ [a, a, a, a, a, a, a, a, a, a, a]|map('upper')|join }}",
    "format width": '{{ "%1000000000d"|format(1) }}',
    "format width from an argument": '{{ "%*d"|format(1000000000, 1) }}',
    "% width from an argument": '{{ "%*d" % (1000000000, 1) }}',
    "% repeating one argument": BIG + '{{ ("%(a)s" * 20) % {"a": a} }}',
    "wordwrap": BIG + '{{ a|wordwrap(1, wrapstring="yyyyyyyyyy") }}',
    "indent by a string": '{% set lines = "\\n" * 99999 %}{{ lines|indent(lines) }}',
    "indent width": '{{ "a\\nb"|indent(1000000000) }}',
    "tojson indent": "{{ items|tojson(indent=100000) }}",
    "batch fill": "{{ [1]|batch(1000000000, 0)|list }}",
    "sum of lists": "{{ [[1] * 99999] * 10|sum(start=[]) }}",
    "range in a filter": "{{ range(100000)|list|length + range(100000)|list|length"
    " + range(100000)|list|length }}",
}


@pytest.mark.parametrize("source", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_hostile_template_is_refused_naming_its_field(source: str) -> None:
    with pytest.raises(TemplateError) as refused:
        render({"text": source}, {"items": list(range(100))}, where="channels.sms.default")
    assert refused.value.field == "channels.sms.default.text"
    assert "not allowed" in str(refused.value)


def test_lipsum_is_gone() -> None:
    with pytest.raises(MissingVariableError):
        render({"text": "{{ lipsum(100000) }}"}, {})


def test_the_budget_is_per_render_not_per_process() -> None:
    loop = "{% for i in range(" + str(MAX_STEPS // 3) + ") %}{% endfor %}done"
    for _ in range(5):  # each alone is within budget; together they would not be
        assert render({"text": loop}, {}) == {"text": "done"}


def test_what_notifications_do_still_renders() -> None:
    data = {
        "name": "Ana",
        "total": 1234.5,
        "lines": [{"sku": f"S-{i}", "qty": i} for i in range(200)],
        "tags": ["a", "b"],
        "note": "first\nsecond",
    }
    source = (
        "{% macro row(l) %}{{ l.sku|center(8) }}x{{ l.qty }}{% endmacro %}"
        "{{ 'Hi ' ~ name|upper }} {{ '%.2f' % total }} {{ '%s-%s'|format(name, total) }} "
        "{{ tags|join(', ') }} {{ name|replace('A', 'a') }} {{ name.lower() }} "
        "{{ lines|sum(attribute='qty') }} {{ lines|map(attribute='sku')|first }} "
        "{{ note|indent(2) }} {{ tags|tojson }} {{ (tags + ['c'])|length }} "
        "{% for l in lines %}{{ row(l) }}{% endfor %}{{ range(3)|list }}"
        "{{ (name * 3)|wordwrap(4) }}"
    )
    text = render({"text": source}, data)["text"]
    assert text.startswith(
        'Hi ANA 1234.50 Ana-1234.5 a, b ana ana 19900 S-0 first\n  second ["a", "b"] 3 '
    )
    assert " S-199  x199" in text
    assert text.endswith("[0, 1, 2]AnaA\nnaAn\na")


# -- filters and operations that go through the data ------------------------------------------

# Data a render may get (under render_budget.MAX_DATA_ITEMS), that a template goes through
# again and again: each pass is allowed, not all of them.
LARGE: dict[str, Any] = {
    "items": list(range(20_000)),
    "objs": [{"a": i % 7, "b": str(i)} for i in range(5_000)],
    "table": {f"k{i}": i for i in range(5_000)},
    "text": "word " * 100_000,
}


def _passes(times: int, expression: str) -> str:
    return f"{{% for i in range({times}) %}}{{% set x = {expression} %}}{{% endfor %}}done"


ITERATING = {
    "groupby": _passes(10, "objs|groupby('a')"),
    "sort by attribute": _passes(10, "objs|sort(attribute='b')"),
    "sort": _passes(3, "items|sort"),
    "selectattr": _passes(10, "objs|selectattr('a')|list"),
    "rejectattr": _passes(10, "objs|rejectattr('a')|list"),
    "select": _passes(3, "items|select('odd')|list"),
    "reject": _passes(3, "items|reject('odd')|list"),
    "map": _passes(10, "objs|map(attribute='b')|list"),
    "unique": _passes(3, "items|unique|list"),
    "dictsort": _passes(12, "table|dictsort"),
    "items": _passes(12, "table|items|list"),
    "sum": _passes(3, "items|sum"),
    "sum of an attribute": _passes(12, "objs|sum(attribute='a')"),
    "min": _passes(3, "items|min"),
    "max": _passes(3, "items|max"),
    "list": _passes(3, "items|list"),
    "batch": _passes(3, "items|batch(3)|list"),
    "slice": _passes(3, "items|slice(3)|list"),
    "join": _passes(3, "items|join(',')"),
    "reverse": _passes(3, "items|reverse|list"),
    "tojson": _passes(5, "objs|tojson"),
    "pprint": _passes(5, "objs|pprint"),
    "string of a list": _passes(3, "items|string"),
    "wordcount": _passes(12, "text|wordcount"),
    "title": _passes(6, "text|title"),
    "wordwrap": _passes(6, "text|wordwrap(10)"),
    "urlize": _passes(2, "text|urlize"),
    "in": _passes(100, "-1 in items"),
    "==": _passes(100, "items == items"),
    "in test": _passes(100, "-1 is in items"),
    "select with the in test": "{{ items|select('in', items)|list|length }}",
    "str.split": _passes(12, "text.split()"),
    "list.count": _passes(3, "items.count(-1)"),
    "dict.values": _passes(12, "-1 in table.values()"),
    "loop.changed": "{% for i in range(100) %}{{ loop.changed(items) }}{% endfor %}",
    "slices": _passes(15_000, "items[1:]"),
}


@pytest.mark.parametrize("source", list(ITERATING.values()), ids=list(ITERATING))
def test_going_through_large_data_again_and_again_is_refused(source: str) -> None:
    with pytest.raises(TemplateError) as refused:
        render({"text": source}, LARGE, where="channels.sms.default")
    assert refused.value.field == "channels.sms.default.text"
    assert f"more than {MAX_STEPS} steps" in str(refused.value)


AMPLIFYING = {
    "modulo in a test": '{% if "%9999999d" is divisibleby(1) %}{% endif %}',
    "modulo in odd": '{% if "%9999999d" is odd %}{% endif %}',
    "round to a huge precision": "{{ 1|round(100000, 'ceil') }}",
    "squaring in a loop": "{% set ns = namespace(x=2**1000) %}{% for i in range(12) %}"
    "{% set ns.x = ns.x * ns.x %}{% endfor %}",
}


@pytest.mark.parametrize("source", list(AMPLIFYING.values()), ids=list(AMPLIFYING))
def test_amplifying_tests_and_numbers_are_refused(source: str) -> None:
    with pytest.raises(TemplateError) as refused:
        render({"text": source}, {}, where="channels.sms.default")
    assert "not allowed" in str(refused.value)


@pytest.mark.parametrize(
    "source",
    [
        BIG + "{{ [a] * 30 }}",
        BIG + '{% set b = "" ~ [a] * 30 %}',
        BIG + '{% set b = "%s" % ([a] * 30,) %}',
        BIG + "{% if ([a] * 30) is lower %}{% endif %}",
        BIG + "{% set ns = namespace(x=[a] * 30) %}{{ ns }}",
    ],
    ids=["{{ }}", "~", "%", "lower test", "a namespace"],
)
def test_a_list_is_refused_before_it_is_printed(source: str) -> None:
    """str() of a list builds all of it: ``[a] * 99999`` would be gigabytes, refused after."""
    with pytest.raises(TemplateError) as refused:
        render({"text": source}, {})
    assert "printing more than" in str(refused.value)


def test_too_much_data_is_refused_naming_data() -> None:
    with pytest.raises(TemplateError) as refused:
        render({"text": "{{ items|length }}"}, {"items": list(range(300_000))})
    assert refused.value.field == "data"

    from herald.domain.render_budget import MAX_DATA_ITEMS

    nested = {"orders": [{"lines": [{"sku": "x"}] * 10}] * (MAX_DATA_ITEMS // 20)}
    with pytest.raises(TemplateError) as refused:
        render({"text": "hi"}, nested)
    assert refused.value.field == "data"
    assert render({"text": "{{ items|length }}"}, {"items": list(range(MAX_DATA_ITEMS - 1))})


def test_data_is_wrapped_once_per_render() -> None:
    """Reading ``order.lines`` again must not copy the list again (in a loop, that was
    100 000 copies of it at no cost in steps)."""
    data = {"order": {"lines": [{"sku": "a"}, {"sku": "b"}]}}
    source = "{{ order.lines is sameas order.lines }} {{ order.lines[0] is sameas order.lines[0] }}"
    assert render({"text": source}, data) == {"text": "True True"}


def test_a_large_ordinary_digest_still_renders() -> None:
    lines = [
        {"sku": f"S-{i}", "name": f"Product {i}", "qty": i % 5 + 1, "price": 9.5 + i,
         "category": "abc"[i % 3], "tags": ["x", "y"]}
        for i in range(1000)
    ]  # fmt: skip
    data = {"name": "ana", "order": {"id": "A-1", "lines": lines}, "featured": ["S-20", "S-40"]}
    source = (
        "Hi {{ name|title }}: {{ order.lines|length }} lines, "
        "{{ order.lines|sum(attribute='qty') }} items, "
        "{{ '%.2f'|format(order.lines|sum(attribute='price')) }}\n"
        "{% for category, group in order.lines|groupby('category') %}{{ category|upper }}\n"
        "{% for l in group|sort(attribute='price', reverse=true) %}"
        "{{ loop.index }}. {{ l.name|truncate(30) }} x{{ l.qty }}"
        "{% if l.sku in featured %} *{% endif %}{% if 'coupon' in order %}!{% endif %}"
        " {{ l.tags|join(',') }}\n{% endfor %}{% endfor %}"
        "Top: {{ (order.lines|max(attribute='price')).name }} "
        "{{ order.lines|map(attribute='sku')|unique|list|length }}"
    )
    text = render({"text": source}, data)["text"]
    assert text.startswith("Hi Ana: 1000 lines, 3000 items, 509000.00\nA\n1. Product 999 x5 x,y\n")
    assert "Product 20 x1 * x,y\n" in text
    assert text.endswith("Top: Product 999 1000")

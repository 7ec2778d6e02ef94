"""Templates that would stall or exhaust a worker are refused, not rendered (render_budget)."""

from __future__ import annotations

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

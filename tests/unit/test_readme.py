"""The README documents every setting, and nothing that is no longer a setting."""

from __future__ import annotations

import re
from pathlib import Path

from herald.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"`(HERALD_[A-Z0-9_]+)`", README))
    settings = {f"HERALD_{name.upper()}" for name in Settings.model_fields}
    assert settings - documented == set(), "settings missing from the README"
    assert documented - settings == set(), "the README documents settings that do not exist"


def test_every_field_of_a_webhook_is_documented() -> None:
    """A receiver written from the README alone knows every field it gets."""
    import json

    from herald.channels.base import OutboundMessage
    from herald.channels.webhook import payload

    paragraph = README[README.index("**Webhooks** are POSTed") :].split("\n\n")[0]
    fields = paragraph.split("with headers")[0]
    # A field opens the list or follows a separator: `id` = …; `type` = …; `tenant`, …
    documented = set(re.findall(r"(?:\(|; |, |\n)`([a-z_]+)`", fields))
    message = OutboundMessage("d", "n", "webhook", "https://example.com/h", "S", "B", attempt=1)
    sent = set(json.loads(payload(message)))
    assert sent - documented == set(), "webhook fields missing from the README"
    assert documented - sent == set(), "the README names webhook fields that are not sent"


def test_every_field_of_a_bus_message_is_documented() -> None:
    """Teams reading the topics learn every field from the README's table, and only those."""
    from pydantic import BaseModel

    from herald.domain.messages import (
        Content,
        DeadLettered,
        DeliveryJob,
        DeliveryPlan,
        DeliveryStatusChanged,
        NotificationRequested,
    )

    rows: dict[str, list[type[BaseModel]]] = {
        "notifications.requested": [NotificationRequested, DeliveryPlan],
        "deliveries.<channel>": [DeliveryJob],
        "notifications.status": [DeliveryStatusChanged],
        "deadletter": [DeadLettered],
    }
    for topic, models in rows.items():
        row = next(line for line in README.splitlines() if line.startswith(f"| `{topic}` |"))
        message = row.rsplit("|", 2)[1]
        documented = set(re.findall(r'"([a-z_]+)"', re.sub(r'"type": "[a-z_.]+"', "", message)))
        fields = {name for model in models for name in model.model_fields} - {"type"}
        assert documented == fields, topic
    legend = README[README.index("The fields: `tenant_id`") :].split("\n\n")[0]
    content = re.search(r"`content`\s+is `\{([^}]*)\}`", legend)
    assert content is not None
    assert set(re.findall(r'"([a-z_]+)"', content.group(1))) == set(Content.model_fields)

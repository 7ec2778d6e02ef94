"""VERP return paths: each email's envelope sender names its delivery (``bounce+<id>@<domain>``),
so a bounce, which goes back to the envelope sender, says which delivery it is about whatever
the bouncing server put in it."""

from __future__ import annotations

from herald.domain.receipts import delivery_named

PREFIX = "bounce+"


def return_path(delivery_id: str, domain: str) -> str:
    return f"{PREFIX}{delivery_id}@{domain}"


def delivery_of(address: str, domain: str) -> str | None:
    """The delivery a return path at ``domain`` names, or None."""
    local, _, host = address.strip().strip("<>").rpartition("@")
    if host.lower() != domain.lower() or not local.lower().startswith(PREFIX):
        return None
    delivery_id = delivery_named(local[len(PREFIX) :])
    # Ids are lower case; a server on the way may have changed the case of the local part.
    return None if delivery_id is None else delivery_id.lower()

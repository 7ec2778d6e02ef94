"""A timeline step in plain words: what an operator reads to learn why a notification was (not)
sent."""

from __future__ import annotations

from herald.store.timeline import Entry

_RECEIPT = {
    "applied": "the delivery's status follows.",
    "recorded": "noted; the status stays.",
    "late": "it came after a later status and changes nothing.",
    "early": "it came before the send was recorded and is applied once it is.",
    "unknown": "no such delivery.",
    None: "noted.",
}


def describe(entry: Entry) -> str:
    on = f" on {entry.channel}" if entry.channel else ""
    via = f" through {entry.provider}" if entry.provider else ""
    attempt = f"Attempt {entry.attempt}" if entry.attempt else "An attempt"
    error = f": {entry.error_class or 'error'} — {entry.error}" if entry.error else ""
    match entry.step:
        case "accepted":
            return f"Accepted and stored ({entry.detail})."
        case "routed":
            where = f" {entry.detail}" if entry.detail else on
            return f"Routed{where}: its deliveries were planned."
        case "published":
            return f"Published to the bus{on}."
        case "sent":
            return f"{attempt}{on}{via} was accepted by the provider: sent."
        case "attempt_failed":
            return f"{attempt}{on}{via} failed ({entry.status}){error}."
        case "retry_scheduled":
            return f"{attempt}{on} is scheduled for {entry.retry_at:%Y-%m-%d %H:%M:%S} UTC."
        case "dead_lettered":
            why = f" ({entry.status})" if entry.status else ""
            return f"Parked in the dead-letter queue{on}{why}{error}; {entry.detail}."
        case "skipped":
            return f"Not sent{on}: {entry.detail or 'skipped'}."
        case "deferred":
            return f"Held back{on}: {entry.detail or 'deferred'}."
        case "superseded":
            return f"Superseded by a newer notification with the same collapse key{on}."
        case "cancelled":
            who = f" {entry.detail}" if entry.detail else ""
            return f"Cancelled{who} before it fell due: nothing is sent."
        case "address_removed":
            return f"The provider says the address is gone{on}: removed from the user."
        case "replayed":
            return f"Replayed from the dead-letter queue{on}."
        case "receipt":
            said = f" ({entry.error})" if entry.error else ""
            then = _RECEIPT.get(entry.detail, "noted.")
            return f"{entry.provider} reports {entry.status}{on}{said}: {then}"
        case "completed":
            return f"Finished: {entry.status}."
    detail = f" ({entry.detail})" if entry.detail else ""
    return f"{entry.step.replace('_', ' ').capitalize()}{on}{detail}."

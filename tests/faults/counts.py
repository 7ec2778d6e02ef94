"""What a fault test reports: accepted, delivered, dead-lettered, duplicated, still retrying."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.smtp_sink import SmtpSink

URL = "/api/v1/notifications"


@dataclass
class Counts:
    accepted: int
    delivered: int
    dead_lettered: int
    duplicated: int
    retrying: int
    lost: int

    def __str__(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.__dict__.items())


async def post_all(http: httpx.AsyncClient, bodies: Iterable[dict[str, Any]]) -> list[str]:
    """POST each body (in order); the ids of those accepted (202)."""
    ids = []
    for body in bodies:
        response = await http.post(URL, json=body)
        if response.status_code == 202:
            ids.append(response.json()["id"])
    return ids


async def notifications(http: httpx.AsyncClient, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {i: (await http.get(f"{URL}/{i}")).json() for i in ids}


async def settle(
    http: httpx.AsyncClient, ids: list[str], timeout: float = 60
) -> dict[str, dict[str, Any]]:
    """Wait until none of them is PENDING any more; their final views."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        views = await notifications(http, ids)
        if all(v["status"] != "PENDING" for v in views.values()):
            return views
        if asyncio.get_running_loop().time() > deadline:
            return views
        await asyncio.sleep(0.1)


IN_PROGRESS = ("PENDING", "PROCESSING", "RETRY_PENDING")


def count(sink: SmtpSink, views: dict[str, dict[str, Any]]) -> Counts:
    """The invariant under test: every accepted notification arrived, was dead-lettered, or
    is visibly still retrying. Anything else is lost (even one recorded SENT that never came)."""
    arrived = {m.notification_id for m in sink.messages()}
    lost = retrying = dead = 0
    for notification_id, view in views.items():
        statuses = [d["status"] for d in view["deliveries"]]
        dead += statuses.count("DEAD_LETTERED")
        if any(s in IN_PROGRESS for s in statuses):
            retrying += 1
        elif notification_id not in arrived and "DEAD_LETTERED" not in statuses:
            lost += 1
    duplicates = sink.duplicates()
    return Counts(
        accepted=len(views),
        delivered=len(arrived & set(views)),
        dead_lettered=dead,
        duplicated=sum(duplicates.values()) - len(duplicates),
        retrying=retrying,
        lost=lost,
    )

"""Decide what a notification request becomes: which deliveries, to which addresses, saying
what. Runs at the API, before anything is stored, so that a request that cannot be sent
(a channel the user cannot be reached on, a template variable the data lacks) is refused
with 422 naming the field instead of failing later in a worker.

Preferences and quiet hours are not applied here but by the router, at sending time: a user
may change them between the request and its ``send_at``.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import anyio

from herald.domain import render_pool, unsubscribe
from herald.domain import templates as rendering
from herald.domain.messages import Content
from herald.errors import HeraldError
from herald.outbound import OutboundPolicy
from herald.pipeline.lookups import Lookups
from herald.records import record
from herald.store.templates import TemplateRecord
from herald.store.users import Profile, UserRecord, subscription_address
from herald.tenancy import DEFAULT_TENANT

# Which profile field reaches a user on each channel, for error messages.
ADDRESS_NAMES = {
    "email": "an email address",
    "sms": "a phone number",
    "push": "a push token",
    "webpush": "a Web Push subscription",
    "webhook": "a webhook URL",
    "apprise": "an Apprise URL",
    "inapp": "a user id",
}


class PlanningError(HeraldError):
    """The request cannot be planned; ``field`` names the part of it at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@record
class NotificationSpec:
    """A notification as asked for, by the API or by an event's rules."""

    tenant_id: str = DEFAULT_TENANT  # whose users and templates it names
    user_id: str | None = None
    contacts: Profile | None = None  # inline recipient; overrides the user's contact points
    channels: tuple[str, ...] | None = None  # None: every channel the user can be reached on
    template: str | None = None
    template_version: int | None = None
    # Events: each channel's template (rules may name different ones).
    channel_templates: dict[str, str] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    locale: str | None = None
    subject: str | None = None
    body: str | None = None
    category: str | None = None
    priority: str = "normal"
    send_at: datetime | None = None
    collapse_key: str | None = None
    event_type: str | None = None
    traceparent: str | None = None
    # The API key asking (None in open mode): its renders are admitted per key (render_pool).
    caller: str | None = None

    @property
    def templated(self) -> bool:
        """Whether its content comes from templates (else it is inline)."""
        return self.template is not None or self.channel_templates is not None

    @property
    def inline(self) -> bool:
        """Whether planning it reads nothing: it names no user and no template."""
        return self.user_id is None and not self.templated

    @classmethod
    def email(
        cls,
        recipient: str,
        subject: str,
        body: str,
        *,
        user_id: str | None = None,
        tenant_id: str = DEFAULT_TENANT,
    ) -> NotificationSpec:
        """The simplest notification: one email with inline content."""
        return cls(
            tenant_id=tenant_id,
            user_id=user_id,
            contacts=Profile(email=recipient),
            channels=("email",),
            subject=subject,
            body=body,
        )


@record
class PlannedDelivery:
    channel: str
    recipient: str
    content: Content


@record
class Draft:
    """A request whose look-ups are done: what is left, rendering, needs no database."""

    spec: NotificationSpec
    user: UserRecord | None
    contacts: Profile
    chosen: dict[str, TemplateRecord]
    channels: list[str]
    category: str | None


@record
class Plan:
    spec: NotificationSpec
    deliveries: list[PlannedDelivery]
    category: str | None
    template: str | None  # "name@version", for the record

    @property
    def user_key(self) -> str:
        """The partition key: one user's notifications stay in order."""
        return self.spec.user_id or self.primary_recipient or self.deliveries[0].recipient[:255]

    @property
    def primary_recipient(self) -> str | None:
        """The email address, else the first address if it is short (a phone, a URL)."""
        for delivery in self.deliveries:
            if delivery.channel == "email":
                return delivery.recipient
        first = self.deliveries[0].recipient
        return first if len(first) <= 255 else None


@dataclass(frozen=True, slots=True)
class Planner:
    channels: Sequence[str]  # those with a provider configured
    critical_categories: frozenset[str]
    public_url: str
    # Where inline webhook URLs, Web Push endpoints and Apprise URLs may point
    # (HERALD_OUTBOUND_ALLOW).
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    # Whether emails get one-click unsubscribe links (signed when sent: unsubscribe_links).
    unsubscribe_links: bool = False
    # Channels left out because their library is not installed, with why.
    unavailable: Mapping[str, str] = field(default_factory=dict)

    async def outbound_refusals(
        self, specs: Sequence[NotificationSpec]
    ) -> list[PlanningError | None]:
        """Why an inline URL of each request may not be reached, where one may not. Resolves
        host names, so callers run it before they take a database connection; only requests
        with such URLs wait for it (a task each for a thousand emails was a fiftieth of a
        batch)."""
        refusals: list[PlanningError | None] = [None] * len(specs)
        reaching = [i for i, s in enumerate(specs) if s.contacts and s.contacts.reaches_out]
        checked = await asyncio.gather(*(self._refusal(specs[i]) for i in reaching))
        for i, refusal in zip(reaching, checked, strict=True):
            refusals[i] = refusal
        return refusals

    async def _refusal(self, spec: NotificationSpec) -> PlanningError | None:
        assert spec.contacts is not None
        try:
            await check_outbound(spec.contacts, self.outbound, prefix="contacts.")
        except PlanningError as exc:
            return exc
        return None

    def plan_inline(self, spec: NotificationSpec) -> Plan:
        """:meth:`draft` and :meth:`finish` at once for an ``inline`` request: nothing to look
        up or render, so nothing to await (most of a batch)."""
        assert spec.inline, "a request naming a user or a template is planned in halves"
        _check_asked(spec)
        return self._finish(self._draft(spec, None, {}), {})

    async def draft(self, lookups: Lookups, spec: NotificationSpec) -> Draft:
        """The first half of planning a request whose inline URLs passed
        :meth:`outbound_refusals`: what needs the database. A caller holding a connection for
        it gives it back before :meth:`finish`, as a render may wait for its turn."""
        _check_asked(spec)
        user = None if spec.user_id is None else await lookups.user(spec.tenant_id, spec.user_id)
        if spec.user_id is not None and user is None and spec.contacts is None:
            raise PlanningError(
                "user_id",
                f"no user {spec.user_id!r}: create it with PUT /api/v1/users/{{id}} "
                "or give a recipient",
            )
        chosen = await self._templates(lookups, spec) if spec.templated else {}
        return self._draft(spec, user, chosen)

    def _draft(
        self, spec: NotificationSpec, user: UserRecord | None, chosen: dict[str, TemplateRecord]
    ) -> Draft:
        contacts = _merge(user.profile if user else None, spec.contacts)
        channels = self._channels(spec, contacts, user, chosen)
        category = spec.category
        if not category and chosen:  # (a generator made for nothing cost 0.3 µs)
            category = next((t.category for t in chosen.values() if t.category), None)
        return Draft(spec, user, contacts, chosen, channels, category)

    async def finish(self, draft: Draft) -> Plan:
        """The second half: the deliveries, with their templates rendered (see render_pool)."""
        spec, chosen = draft.spec, draft.chosen
        rendered = {
            channel: await self._rendered(spec, channel, chosen[channel], draft.user)
            for channel in draft.channels
            if channel in chosen
        }
        return self._finish(draft, rendered)

    def _finish(self, draft: Draft, rendered: dict[str, Content]) -> Plan:
        """The deliveries, each channel's content rendered (``rendered``) or inline."""
        spec, user, chosen, category = draft.spec, draft.user, draft.chosen, draft.category
        deliveries: list[PlannedDelivery] = []
        for channel in draft.channels:
            content = rendered[channel] if channel in rendered else _inline_content(spec, channel)
            if channel == "email" and self._unsubscribable(user, category):
                content = content.model_copy(update={"unsubscribe": True})
            for address in _addresses(channel, draft.contacts, spec.user_id):
                deliveries.append(PlannedDelivery(channel, address, content))
        template = None
        if spec.template is not None:
            named = next((t for t in chosen.values() if t.name == spec.template), None)
            template = None if named is None else f"{named.name}@{named.version}"
        return Plan(spec, deliveries, category, template)

    async def _templates(
        self, lookups: Lookups, spec: NotificationSpec
    ) -> dict[str, TemplateRecord]:
        """Each channel's template, for the channels its template has a variant for."""
        wanted: dict[str, str] = dict(spec.channel_templates or {})
        by_name: dict[str, TemplateRecord] = {}
        if spec.template is not None:
            record = await lookups.template(spec.tenant_id, spec.template, spec.template_version)
            if record is None:
                version = (
                    "" if spec.template_version is None else f" version {spec.template_version}"
                )
                raise PlanningError("template", f"no template {spec.template!r}{version}")
            by_name[record.name] = record
            for channel in record.channels:
                wanted.setdefault(channel, record.name)
        for name in set(wanted.values()) - set(by_name):
            record = await lookups.template(spec.tenant_id, name)
            if record is None:
                raise PlanningError("template", f"no template {name!r}")
            by_name[name] = record
        return {
            channel: by_name[name]
            for channel, name in wanted.items()
            if channel in by_name[name].channels
        }

    def _channels(
        self,
        spec: NotificationSpec,
        contacts: Profile,
        user: UserRecord | None,
        chosen: dict[str, TemplateRecord],
    ) -> list[str]:
        templated = spec.templated
        if spec.channels is not None:
            for i, channel in enumerate(spec.channels):
                where = f"channels[{i}]"
                if channel in self.unavailable:
                    raise PlanningError(
                        where, f"{channel} is unavailable: {self.unavailable[channel]}"
                    )
                if channel not in self.channels:
                    raise PlanningError(where, f"no provider is configured for {channel}")
                if not _reachable(channel, contacts, spec.user_id):
                    who = f"user {spec.user_id!r}" if user else "the recipient"
                    raise PlanningError(where, f"{who} has no {ADDRESS_NAMES[channel]}")
                if templated and channel not in chosen:
                    raise PlanningError(where, f"the template has no {channel} variant")
            return list(spec.channels)
        # "Per preferences": every configured channel the user can be reached on; the
        # inbox only for registered users, so an ad-hoc user_id does not grow one.
        found = [
            c
            for c in self.channels
            if _reachable(c, contacts, spec.user_id)
            and (c != "inapp" or user is not None)
            and (not templated or c in chosen)
        ]
        if not found:
            raise PlanningError(
                "channels", "the recipient cannot be reached on any configured channel"
            )
        return found

    async def _rendered(
        self,
        spec: NotificationSpec,
        channel: str,
        template: TemplateRecord,
        user: UserRecord | None,
    ) -> Content:
        variants = template.channels[channel]
        locale = rendering.pick_locale(
            variants, spec.locale or (user.profile.locale if user else None)
        )
        where = f"{template.name}.{channel}.{locale}"
        try:
            # Off the event loop: a template may take up to its render budget (well under a
            # second). May raise RendersBusyError (429) when the key renders too much at once.
            rendered = await render_pool.render(
                variants[locale], spec.data, where=where, caller=spec.caller
            )
        except rendering.DataTooLargeError as exc:
            raise PlanningError("data", exc.detail) from None
        except rendering.MissingVariableError as exc:
            raise PlanningError(
                f"data.{exc.variable}",
                f"template {template.name!r} ({channel}, {locale}) needs {exc.variable!r}",
            ) from None
        except rendering.TemplateError as exc:
            raise PlanningError("template", str(exc)) from None
        subject, body, html = rendering.to_content(channel, rendered)
        return Content(subject=subject, body=body, html=html, data=spec.data)

    def _unsubscribable(self, user: UserRecord | None, category: str | None) -> bool:
        """Whether there is something to leave by RFC 8058 one-click unsubscribe: a registered
        user and a category that is not critical. A template's category may be any text; a
        link carries only names the API takes."""
        return (
            self.unsubscribe_links
            and user is not None
            and category is not None
            and category not in self.critical_categories
            and unsubscribe.valid_category(category)
        )


async def check_outbound(contacts: Profile, policy: OutboundPolicy, *, prefix: str = "") -> None:
    """Refuses a webhook URL, Web Push endpoint or Apprise URL that Herald may not connect to
    (see herald.outbound and herald.channels.apprise_hosts), naming its field. They are
    resolved at once; the first refused is named."""
    urls = [("webhook_url", contacts.webhook_url)] if contacts.webhook_url else []
    urls += [
        (f"web_push[{i}].endpoint", str(s.get("endpoint", "")))
        for i, s in enumerate(contacts.web_push)
    ]
    refusals = list(await asyncio.gather(*(policy.refusal(url) for _, url in urls)))
    if contacts.apprise_urls:
        urls += [(f"apprise_urls[{i}]", url) for i, url in enumerate(contacts.apprise_urls)]
        refusals += await _apprise_refusals(contacts.apprise_urls, policy)
    for (name, _), refusal in zip(urls, refusals, strict=True):
        if refusal is not None:
            raise PlanningError(prefix + name, refusal)


async def _apprise_refusals(urls: Sequence[str], policy: OutboundPolicy) -> list[str | None]:
    try:
        # Apprise is an extra, and importing it takes a second: not on the event loop.
        await anyio.to_thread.run_sync(importlib.import_module, "herald.channels.apprise")
    except ImportError:
        return ["cannot be checked: Apprise is not installed"] * len(urls)
    from herald.channels import apprise

    return list(await asyncio.gather(*(apprise.refusal(url, policy) for url in urls)))


def _check_asked(spec: NotificationSpec) -> None:
    """What a request must say before anything is looked up for it."""
    if spec.user_id is None and spec.contacts is None:
        raise PlanningError("recipient", "give user_id, recipient or contacts")
    if spec.template is not None and spec.body is not None:
        raise PlanningError("message", "give either template (with data) or message")


def _inline_content(spec: NotificationSpec, channel: str) -> Content:
    if spec.body is None:
        raise PlanningError("message", f"is required for {channel} without a template")
    if channel == "email" and not spec.subject:
        raise PlanningError("subject", "is required for email")
    if not spec.data:  # validating even an empty dict doubled the cost (1.2 µs)
        return Content(subject=spec.subject, body=spec.body)
    return Content(subject=spec.subject, body=spec.body, data=spec.data)


def _merge(profile: Profile | None, inline: Profile | None) -> Profile:
    if profile is None:
        return inline or Profile()
    if inline is None:
        return profile
    chosen = {
        name: getattr(inline, name) or getattr(profile, name)
        for name in Profile.__dataclass_fields__
    }
    return replace(profile, **chosen)


# The contact point each channel's addresses come from (the inbox's: the user id).
_CONTACT_FIELD = {
    "email": "email",
    "sms": "phone",
    "push": "push_tokens",
    "webpush": "web_push",
    "webhook": "webhook_url",
    "apprise": "apprise_urls",
}


def _reachable(channel: str, contacts: Profile, user_id: str | None) -> bool:
    """Whether _addresses finds any, without making them (asked of every configured channel
    for each notification: five lists made for one used)."""
    if channel == "inapp":
        return bool(user_id)
    name = _CONTACT_FIELD.get(channel)
    return name is not None and bool(getattr(contacts, name))


def _addresses(channel: str, contacts: Profile, user_id: str | None) -> list[str]:
    if channel == "inapp":
        return [user_id] if user_id else []
    name = _CONTACT_FIELD.get(channel)
    found = getattr(contacts, name) if name is not None else None
    if not found:
        return []
    if channel == "webpush":
        return [subscription_address(s) for s in found]
    return list(found) if isinstance(found, list) else [found]

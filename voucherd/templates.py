"""Reward messages: Liquid templates, parsed when a campaign is saved, rendered per reward.

A template sees `Event` (the reward event's properties, `{{ Event.voucherCode }}`), `Profile`
(`{{ Profile.user_id }}`) and `Trigger` (the qualifying event's `name` and `properties`).
Rendering never fails a reward: a missing variable renders empty, and a template that fails
at render time (a filter given a value it cannot take) gives an empty message, logged.
"""

from __future__ import annotations

import logging
from typing import Any

import liquid
from liquid.exceptions import LiquidError

from voucherd import errors

log = logging.getLogger(__name__)

MAX_TEMPLATE = 10_000


class _Environment(liquid.Environment):
    # Templates come from administrators, but a typo must not make every reward slow, nor a
    # string doubled in a loop take the server's memory.
    loop_iteration_limit = 1000
    output_stream_limit = 4000
    context_depth_limit = 30
    local_namespace_limit = 100_000  # bytes of assigned and captured values


_ENVIRONMENT = _Environment()

# What a template is tried against when saved, so an unknown filter is refused then, not met
# at the first reward.
SAMPLE_EVENT: dict[str, Any] = {
    "CT Source": "Promo Module",
    "campaignId": 1,
    "eventTimestamp": 1767225599,
    "listDescription": "Orders above $100",
    "listExpiry": "2026-12-31T23:59:59Z",
    "listTag": "sample",
    "partner": "Sample",
    "source": "Campaign",
    "voucherCode": "SAMPLE-CODE",
    "voucherListId": 1,
    "userId": "u-1",
    "message": None,
}


class InvalidTemplate(errors.InvalidRequest):
    code = "invalid_template"


class Template:
    __slots__ = ("_parsed", "source")

    def __init__(self, source: str) -> None:
        if len(source) > MAX_TEMPLATE:
            raise InvalidTemplate(f"message_template must be at most {MAX_TEMPLATE} characters")
        try:
            self._parsed = _ENVIRONMENT.from_string(source)
        except LiquidError as exc:
            # The first line of liquid's message says what is wrong; the rest draws the source.
            raise InvalidTemplate(
                f"message_template is not valid Liquid: {_first_line(exc)}"
            ) from None
        self.source = source

    @classmethod
    def checked(cls, source: str) -> Template:
        """A template for a campaign: it must also render the sample event without error."""
        template = cls(source)
        unknown = sorted(set(template._parsed.filter_names()) - set(_ENVIRONMENT.filters))
        if unknown:
            # In a branch the sample below may never take.
            raise InvalidTemplate(f"message_template uses an unknown filter: {unknown[0]}")
        template.preview(SAMPLE_EVENT)
        return template

    def preview(
        self,
        event: dict[str, Any],
        profile: dict[str, Any] | None = None,
        trigger: dict[str, Any] | None = None,
    ) -> str:
        """Render, reporting a failure as a 400 instead of hiding it."""
        try:
            return self._render(event, profile, trigger)
        except LiquidError as exc:
            raise InvalidTemplate(
                f"message_template failed to render: {_first_line(exc)}"
            ) from None
        except Exception as exc:
            # Some filters raise plain Python errors (a bad base64 string, a number too
            # large for a date); their text may quote the value, so only the kind is told.
            raise InvalidTemplate(
                f"message_template failed to render ({type(exc).__name__})"
            ) from None

    def render(
        self,
        event: dict[str, Any],
        profile: dict[str, Any] | None = None,
        trigger: dict[str, Any] | None = None,
    ) -> str:
        try:
            return self._render(event, profile, trigger)
        except Exception as exc:
            # Never fail a reward over its message; the event keeps the code either way.
            log.warning("a message template failed to render: %s", type(exc).__name__)
            return ""

    def _render(
        self,
        event: dict[str, Any],
        profile: dict[str, Any] | None,
        trigger: dict[str, Any] | None,
    ) -> str:
        return self._parsed.render(
            Event=event,
            Profile=profile if profile is not None else {"user_id": event.get("userId")},
            Trigger=trigger or {},
        )


def _first_line(exc: Exception) -> str:
    # Liquid's message says what is wrong on its first line, then draws the source.
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__

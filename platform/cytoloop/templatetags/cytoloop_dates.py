"""Times as people read them: every time shown carries its date and zone.

``{% load cytoloop_dates %}`` then ``{{ moment|when }}`` -> "3 Dec 2026, 06:56 UTC" (in the
current time zone, TIME_ZONE by default). ``None`` renders as "" so optional times need no guard.
"""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import dateformat, timezone

register = template.Library()

#: Django date format of ``when``: day without a leading zero, month name, year, 24-hour time, zone.
WHEN_FORMAT = "j M Y, H:i T"


def format_when(moment: datetime | None) -> str:
    """The one way a time is written on a page or in a message: "3 Dec 2026, 06:56 UTC"."""
    if moment is None:
        return ""
    if timezone.is_aware(moment):
        moment = timezone.localtime(moment)
    return dateformat.format(moment, WHEN_FORMAT)


@register.filter(name="when", expects_localtime=False)
def when(moment) -> str:
    return format_when(moment) if isinstance(moment, datetime) else ""

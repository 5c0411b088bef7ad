"""The home page's sections: each role's real home, built by the app that owns the data.

Apps depend one way (platform <- annotation <- training <- inference), so the platform never
imports them: an app puts a ``home_sections`` module beside its models and registers builders
with ``@section(...)``; the home view (cytoloop.views.home) asks ``sections_for(request)``.
Django's admin finds its ``admin`` modules the same way (autodiscover_modules).

A builder takes the request and returns the context of its template (or None to show nothing).
It must stay cheap: a fixed number of queries whatever the amount of data (the home tests assert
a query bound).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.utils.module_loading import autodiscover_modules

from cytoloop.roles import Role, user_roles

#: the order a user with several roles sees their sections in
ROLE_ORDER = (Role.PATHOLOGIST, Role.REVIEWER, Role.ADMIN)
ROLE_TITLES = {Role.PATHOLOGIST: "Annotate", Role.REVIEWER: "Review", Role.ADMIN: "The lab at a glance"}


@dataclass(frozen=True)
class Section:
    key: str
    role: Role
    order: int
    template: str
    build: Callable


_SECTIONS: dict[str, Section] = {}
_discovered = False


def section(*, key: str, role: Role, template: str, order: int = 100):
    """Register ``build(request) -> dict | None`` as the home section ``key`` for ``role``."""

    def register(build):
        _SECTIONS[key] = Section(key=key, role=role, order=order, template=template, build=build)
        return build

    return register


def _discover() -> None:
    global _discovered
    if not _discovered:
        autodiscover_modules("home_sections")
        _discovered = True


def sections_for(request) -> list[dict]:
    """One group per role the user holds (in ROLE_ORDER), each with its built sections."""
    _discover()
    roles = user_roles(request.user)
    groups = []
    for role in ROLE_ORDER:
        if role not in roles:
            continue
        built = []
        for s in sorted((s for s in _SECTIONS.values() if s.role is role), key=lambda s: (s.order, s.key)):
            data = s.build(request)
            if data is not None:
                built.append({"key": s.key, "template": s.template, "data": data})
        groups.append({"role": role.value, "title": ROLE_TITLES[role], "sections": built})
    return groups

"""Roles and every role check: the one place that decides who may do what.

Roles are Django groups (pathologist, reviewer, admin) carrying permissions; a user may hold
several. Views use ``role_required``, API views ``HasRole``, templates ``user_roles``/``nav``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import wraps

from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequired
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.urls import NoReverseMatch, reverse
from rest_framework.permissions import BasePermission


class Role(StrEnum):
    PATHOLOGIST = "pathologist"
    REVIEWER = "reviewer"
    ADMIN = "admin"


#: cytoloop.* permissions each role's group carries. Admin also gets every model permission.
ROLE_PERMISSIONS: dict[Role, tuple[str, ...]] = {
    Role.PATHOLOGIST: ("annotate",),
    Role.REVIEWER: ("review",),
    Role.ADMIN: ("manage_datasets", "manage_users", "train_models", "run_rounds"),
}
ADMIN_MODEL_APPS = ("auth", "annotation", "training", "inference", "django_celery_results")


@transaction.atomic
def ensure_roles(using: str = "default") -> dict[Role, Group]:
    """Create the role groups and give them their permissions (idempotent; runs after migrate)."""
    groups = {}
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.using(using).get_or_create(name=role.value)
        perms = list(
            Permission.objects.using(using).filter(
                content_type__app_label="cytoloop", codename__in=codenames
            )
        )
        if role is Role.ADMIN:
            perms += list(
                Permission.objects.using(using).filter(content_type__app_label__in=ADMIN_MODEL_APPS)
            )
        group.permissions.set(perms)
        groups[role] = group
    return groups


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise ValueError(
            f"unknown role {value!r}; expected one of {', '.join(r.value for r in Role)}"
        ) from None


def user_roles(user) -> frozenset[Role]:
    """The roles a user holds (cached on the user object for the request)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    cached = getattr(user, "_cytoloop_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = frozenset(r for r in Role if r.value in names)
        user._cytoloop_roles = cached
    return cached


def has_role(user, *roles: Role) -> bool:
    """True when the user holds at least one of ``roles``."""
    return bool(user_roles(user) & set(roles))


@transaction.atomic
def set_roles(user, roles: Iterable[Role], *, replace: bool = False) -> None:
    """Give ``user`` these roles (added to what they hold unless ``replace``). Admins are staff."""
    groups = ensure_roles()
    wanted = {groups[r] for r in roles}
    if replace:
        user.groups.set(wanted)
    else:
        user.groups.add(*wanted)
    user.is_staff = user.groups.filter(name=Role.ADMIN.value).exists()
    user.save(update_fields=["is_staff"])
    user.__dict__.pop("_cytoloop_roles", None)


def role_required(*roles: Role):
    """View decorator: 403 unless the (logged-in) user holds one of ``roles``."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not has_role(request.user, *roles):
                raise PermissionDenied(
                    "This page needs the role " + " or ".join(r.value for r in roles) + "."
                )
            return view(request, *args, **kwargs)

        wrapper.required_roles = roles
        return wrapper

    return decorator


class HasRole(BasePermission):
    """DRF permission: ``permission_classes = [HasRole.of(Role.REVIEWER)]``."""

    roles: tuple[Role, ...] = ()
    message = "You do not hold the role this endpoint needs."

    @classmethod
    def of(cls, *roles: Role) -> type[HasRole]:
        return type("HasRole_" + "_".join(r.value for r in roles), (cls,), {"roles": roles})

    def has_permission(self, request, view) -> bool:
        return has_role(request.user, *self.roles)


class LoginRequiredMiddleware(DjangoLoginRequired):
    """Every page needs a login (Django's middleware). The API answers 401/403 JSON itself
    (DRF's IsAuthenticated default) instead of redirecting to the login page."""

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path_info.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)


@dataclass(frozen=True)
class NavItem:
    label: str
    url_name: str
    roles: tuple[Role, ...] | None = None  # None: every logged-in user


#: Navigation, in order. Items whose URL does not exist (yet) are left out.
NAV: tuple[NavItem, ...] = (
    NavItem("Dashboard", "home"),
    NavItem("My queue", "annotate:queue", (Role.PATHOLOGIST,)),
    NavItem("Disputes", "review:disputes", (Role.REVIEWER,)),
    NavItem("Agreement", "review:dashboard", (Role.REVIEWER, Role.ADMIN)),
    NavItem("Datasets", "annotation:datasets", (Role.PATHOLOGIST, Role.REVIEWER, Role.ADMIN)),
    NavItem("Import", "annotation:import", (Role.ADMIN,)),
    NavItem("Training", "training:runs", (Role.ADMIN,)),
    NavItem("Active learning", "inference:index", (Role.ADMIN,)),
    NavItem("Users", "admin:auth_user_changelist", (Role.ADMIN,)),
    NavItem("System", "system", (Role.ADMIN,)),
    NavItem("API", "api-docs", (Role.ADMIN,)),
)


def nav_for(user, current_path: str = "") -> list[dict]:
    roles = user_roles(user)
    items = []
    for item in NAV:
        if item.roles is not None and not roles & set(item.roles):
            continue
        try:
            url = reverse(item.url_name)
        except NoReverseMatch:
            continue
        items.append({"label": item.label, "url": url, "active": False})
    # the item whose URL is the longest prefix of the current page is the one we are on
    matches = [i for i in items if (current_path == i["url"] if i["url"] == "/" else current_path.startswith(i["url"]))]
    if matches:
        max(matches, key=lambda i: len(i["url"]))["active"] = True
    return items


def roles_context(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"user_roles": [], "nav": []}
    return {
        "user_roles": sorted(r.value for r in user_roles(user)),
        "nav": nav_for(user, request.path),
    }

"""Roles are groups with permissions; adduser creates/updates; role checks gate pages and API."""

import pytest
from django.contrib.auth import get_user_model

from cytoloop.roles import Role, ensure_roles, has_role, user_roles
from tests.helpers import manage

pytestmark = pytest.mark.django_db


def test_role_groups_exist_with_their_permissions():
    groups = ensure_roles()
    assert {g.name for g in groups.values()} == {"pathologist", "reviewer", "admin"}
    assert groups[Role.PATHOLOGIST].permissions.filter(codename="annotate").exists()
    assert groups[Role.REVIEWER].permissions.filter(codename="review").exists()
    assert not groups[Role.REVIEWER].permissions.filter(codename="annotate").exists()
    admin_perms = set(groups[Role.ADMIN].permissions.values_list("codename", flat=True))
    assert {"train_models", "manage_users", "add_user"} <= admin_perms


def test_adduser_creates_a_user_with_a_role_and_prints_a_password(transactional_db):
    result = manage("adduser", "Rita@Example.org", "--role", "reviewer")
    assert result.returncode == 0, result.stderr
    assert "created rita@example.org" in result.stdout
    password = result.stdout.split("password:")[1].strip()
    user = get_user_model().objects.get(username="rita@example.org")
    assert user.check_password(password)
    assert user_roles(user) == {Role.REVIEWER}


def test_adduser_updates_and_a_user_may_hold_several_roles(transactional_db):
    assert manage("adduser", "p@example.org", "--role", "pathologist").returncode == 0
    result = manage(
        "adduser", "p@example.org", "--role", "reviewer", "--role", "admin", "--password-stdin",
        input="s3cret-pass-word\n",
    )
    assert result.returncode == 0, result.stderr
    assert "updated p@example.org" in result.stdout and "password:" not in result.stdout
    user = get_user_model().objects.get(username="p@example.org")
    assert user.check_password("s3cret-pass-word")
    assert user_roles(user) == {Role.PATHOLOGIST, Role.REVIEWER, Role.ADMIN}
    assert user.is_staff  # admins reach the Django admin


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-an-email", "--role", "reviewer"], "not a valid email address"),
        (["a@example.org", "--role", "boss"], "unknown role 'boss'"),
        (["a@example.org", "--role", "reviewer", "--password-stdin"], "held no password"),
    ],
)
def test_adduser_refuses_bad_input_with_one_clear_line(transactional_db, args, message):
    result = manage("adduser", *args, input="")
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not get_user_model().objects.exists()


def test_has_role_is_false_for_anonymous_and_inactive(make_user):
    from django.contrib.auth.models import AnonymousUser

    user = make_user("x@example.org", roles=["admin"])
    assert has_role(user, Role.ADMIN)
    user.is_active = False
    user.__dict__.pop("_cytoloop_roles", None)
    assert not has_role(user, Role.ADMIN)
    assert not has_role(AnonymousUser(), Role.ADMIN)


def test_admin_only_page_is_forbidden_to_other_roles(client_as):
    assert client_as("pathologist").get("/system/").status_code == 403


def test_admin_only_page_is_open_to_admins(client_as):
    assert client_as("admin").get("/system/").status_code == 200

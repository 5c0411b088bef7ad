"""Every page and API endpoint requires a login; only login and /healthz are open."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

# login pages, the status probe, and Label Studio's webhook (authenticated by its shared secret,
# tested in tests/annotation/test_labelstudio.py)
OPEN = {"/login/", "/admin/login/", "/healthz", "/healthz/live", "/healthz/ready",
        "/api/labelstudio/webhook/"}


def _concrete_paths(patterns, prefix=""):
    for p in patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            yield from _concrete_paths(p.url_patterns, route)
        elif isinstance(p, URLPattern):
            if any(ch in route for ch in "<(^$?*"):
                # fill path converters with a plausible value
                import re

                route = re.sub(r"<(?:int:)?\w+>", "1", route)
                route = re.sub(r"<\w+:\w+>", "x", route)
                if any(ch in route for ch in "(^$?*"):
                    continue  # regex patterns (admin internals); covered by the admin's own login
            yield "/" + route


def test_every_page_redirects_anonymous_users_to_login(client):
    paths = sorted(set(_concrete_paths(get_resolver().url_patterns)))
    assert len(paths) > 5
    for path in paths:
        if path in OPEN:
            continue
        response = client.get(path)
        if path.startswith("/api/"):
            assert response.status_code in (401, 403), path
        else:
            assert response.status_code == 302, path
            assert "/login/" in response["Location"], path


def test_login_page_logs_in_and_logout_needs_post(client, make_user):
    make_user("a@example.org", roles=["reviewer"], password="pw-123-long")
    response = client.post("/login/", {"username": "a@example.org", "password": "pw-123-long"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.get("/logout/").status_code == 405
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_wrong_password_says_so(client, make_user):
    make_user("a@example.org", roles=["reviewer"])
    response = client.post("/login/", {"username": "a@example.org", "password": "nope"})
    assert response.status_code == 200
    assert b"do not match an active account" in response.content


def test_openapi_schema_and_docs_are_served_to_logged_in_users_without_a_cdn(client_as):
    client = client_as("admin")
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"openapi" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "cdn" not in html.lower() and "/static/drf_spectacular_sidecar/" in html


def test_htmx_is_served_from_static_not_a_cdn(client_as):
    html = client_as("pathologist").get("/").content.decode()
    assert "/static/vendor/htmx/htmx.min.js" in html
    assert "unpkg" not in html and "cdn" not in html.lower()
    from django.contrib.staticfiles import finders

    assert finders.find("vendor/htmx/htmx.min.js"), "run `make static` (npm ci) first"

"""Smoke: each role logs in through a real browser and sees its own navigation."""

import pytest

pytestmark = pytest.mark.e2e

EXPECTED_NAV = {
    "pathologist": {"present": ["Dashboard"], "absent": ["Users", "System", "API"]},
    "reviewer": {"present": ["Dashboard"], "absent": ["Users", "System", "API"]},
    "admin": {"present": ["Dashboard", "Users", "System", "API"], "absent": []},
}


@pytest.mark.parametrize("role", ["pathologist", "reviewer", "admin"])
def test_each_role_logs_in_and_sees_its_navigation(role, make_user, login, artifacts_dir, live_server):
    make_user(f"{role}@example.org", roles=[role], password="browser-pass-1")
    page = login(f"{role}@example.org", "browser-pass-1")

    nav = [t.strip() for t in page.locator("nav.mainnav a").all_inner_texts()]
    for label in EXPECTED_NAV[role]["present"]:
        assert label in nav, (role, nav)
    for label in EXPECTED_NAV[role]["absent"]:
        assert label not in nav, (role, nav)
    assert [t.lower() for t in page.locator(".who .role").all_inner_texts()] == [role]
    assert page.locator(f"#panel-{role}").is_visible()
    # htmx came from our static files and loaded
    assert page.evaluate("typeof window.htmx") == "object"
    page.screenshot(path=str(artifacts_dir / f"smoke-{role}.png"), full_page=True)

    page.click("text=Log out")
    page.wait_for_url("**/login/")

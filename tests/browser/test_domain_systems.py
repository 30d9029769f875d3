"""Single sign-on and logout across the two demo domain systems, in Chromium."""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect

from tests.browser.conftest import Stack, expect_signed_in, log_in, screenshot

#: How long the logout sender may take to tell the other domain system (it polls its outbox).
BACKCHANNEL_TIMEOUT = 20.0


def sign_in_by_single_sign_on(page: Page, stack: Stack, system: str) -> list[str]:
    """Sign in to ``system`` while signed in at UEOZ; return what was asked of the node."""
    asked_of_node: list[str] = []
    page.on(
        "request",
        lambda request: (
            asked_of_node.append(request.url) if request.url.startswith(stack.node_url) else None
        ),
    )
    page.goto(stack.domain_system(system))
    expect(page.get_by_text("Nie jesteś zalogowany.")).to_be_visible()
    page.get_by_role("link", name="Zaloguj się przez UEOZ").click()
    return asked_of_node


def test_a_second_domain_system_signs_in_by_single_sign_on_without_the_node(page, demo):
    log_in(page, demo, "Zofia", system="P1")
    at_p1 = expect_signed_in(page, demo, "P1", "Zofia Dąbrowska")

    asked_of_node = sign_in_by_single_sign_on(page, demo, "GABINET")

    at_gabinet = expect_signed_in(page, demo, "GABINET", "Zofia Dąbrowska")
    assert asked_of_node == [], "the node's login page was shown again"
    assert at_gabinet["email"] == at_p1["email"] == "mkaczmarek@demo.ueoz.example"
    assert at_gabinet["sid"] == at_p1["sid"]  # one UEOZ session
    assert at_gabinet["sub"] != at_p1["sub"]  # pairwise: the systems cannot match her up
    assert at_gabinet["roles"] == "[]"  # her e-PLOZ grants are P1's only
    screenshot(page, "17-second-domain-system-by-sso")


def test_logging_out_of_one_domain_system_ends_the_other_too(page, demo):
    log_in(page, demo, "Zofia", system="P1")
    expect_signed_in(page, demo, "P1", "Zofia Dąbrowska")
    gabinet = page.context.new_page()
    sign_in_by_single_sign_on(gabinet, demo, "GABINET")
    expect_signed_in(gabinet, demo, "GABINET", "Zofia Dąbrowska")

    page.get_by_role("button", name="Wyloguj").click()

    # Back at P1 (RP-initiated logout, its registered post-logout address), signed out.
    expect(page).to_have_url(demo.domain_system("P1"))
    expect(page.get_by_text("Nie jesteś zalogowany.")).to_be_visible()
    # gabinet.gov.pl learns of it server to server (back-channel), once the logout sender
    # has delivered its logout token: the person sees it at the next page they open there.
    deadline = time.monotonic() + BACKCHANNEL_TIMEOUT
    while True:
        gabinet.reload()
        if gabinet.get_by_text("Nie jesteś zalogowany.").is_visible():
            break
        assert time.monotonic() < deadline, (
            f"gabinet.gov.pl still signed in after {BACKCHANNEL_TIMEOUT} s"
        )
        gabinet.wait_for_timeout(300)
    expect(gabinet.locator("#signed-in")).to_have_count(0)

    # The UEOZ session ended with them: signing in again takes the node.
    gabinet.get_by_role("link", name="Zaloguj się przez UEOZ").click()
    gabinet.wait_for_url("**/SingleSignOnService")

"""Signed, expiring links to the console's incident pages (bigsister_ray.alerts.links): a link opens its own page
until it expires; an expired, tampered, re-targeted or foreign-key link is refused with what to do."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from bigsister_ray.alerts.links import LinkError, LinkSigner, incident_page_path, sign_path, verify_path
from bigsister_ray.config import Settings
from bigsister_ray.errors import ConfigError

SECRET = SecretStr("a-link-key-of-more-than-32-characters-0123")
NOW = 1_767_225_600.0


def parts(url: str) -> tuple[str, dict[str, str]]:
    u = urlsplit(url)
    return u.path, {k: v[0] for k, v in parse_qs(u.query).items()}


def test_a_signed_link_opens_its_page_until_it_expires():
    signer = LinkSigner("https://cctv.example.org/", SECRET, ttl_s=600, clock=lambda: NOW)
    url = signer.incident_url(42)
    assert url.startswith("https://cctv.example.org/ui/incidents/42?")
    path, q = parts(url)
    assert path == incident_page_path(42) and int(q["exp"]) == NOW + 600
    verify_path(path, q["exp"], q["sig"], SECRET, now=NOW)  # positive control
    verify_path(path, q["exp"], q["sig"], SECRET, now=NOW + 600)  # the last second still opens
    with pytest.raises(LinkError, match="expired 1 s ago: log in"):
        verify_path(path, q["exp"], q["sig"], SECRET, now=NOW + 601)


@pytest.mark.parametrize("change", ["other incident", "later expiry", "signature edited", "other key", "unsigned", "bad exp"])
def test_a_changed_link_is_refused(change):
    path, q = "/ui/incidents/42", sign_path("/ui/incidents/42", SECRET, NOW + 600)
    verify_path(path, q["exp"], q["sig"], SECRET, now=NOW)  # positive control: the untouched link opens
    exp, sig, secret = q["exp"], q["sig"], SECRET
    if change == "other incident":
        path = "/ui/incidents/43"
    elif change == "later expiry":
        exp = str(int(exp) + 86400)
    elif change == "signature edited":
        sig = ("A" if sig[0] != "A" else "B") + sig[1:]
    elif change == "other key":
        secret = SecretStr("another-deployment-key-0123456789abcdef")
    elif change == "unsigned":
        sig = None
    elif change == "bad exp":
        exp = "tomorrow"
    with pytest.raises(LinkError, match="log in"):
        verify_path(path, exp, sig, secret, now=NOW)


def test_without_a_key_links_are_plain_and_nothing_verifies():
    signer = LinkSigner("https://cctv.example.org", None)
    assert signer.incident_url(7) == "https://cctv.example.org/ui/incidents/7"
    with pytest.raises(LinkError, match="serve.links.secret is not set"):
        signer.verify("/ui/incidents/7", "1", "x")


def test_a_short_key_is_a_config_error_that_says_how_to_make_one():
    with pytest.raises(ConfigError, match="at least 32 random characters"):
        LinkSigner("https://x", SecretStr("short"))
    with pytest.raises(Exception, match="at least 32 random characters"):
        Settings(serve={"links": {"secret": "short"}})


def test_the_signer_follows_the_settings_and_workers_do_not_get_the_key():
    settings = Settings(serve={"public_url": "https://cctv.example.org", "links": {"secret": SECRET.get_secret_value(), "ttl_s": 60}})
    signer = LinkSigner.from_settings(settings)
    assert signer.signed and signer.ttl_s == 60 and SECRET.get_secret_value() not in repr(signer)
    assert settings.for_workers().serve.links.secret is None
    assert LinkSigner.from_settings(settings.for_workers()).incident_url(3) == "https://cctv.example.org/ui/incidents/3"

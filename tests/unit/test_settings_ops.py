"""The operator's limits that used to be hard-coded (issue 14): their defaults and their checks."""

from __future__ import annotations

import pytest

from gateway.settings import SettingsError, load_settings


def test_settings_ops_defaults_keep_the_previous_behaviour() -> None:
    settings = load_settings(env={})
    assert settings.max_request_body_bytes == 10_000_000  # Litestar's default before the setting
    assert settings.egress_proxy == ""  # direct connections


@pytest.mark.parametrize(
    "url",
    ["http://proxy.internal:3128", "https://user:p%40ss@proxy.internal", "http://[::1]:8888/"],
)
def test_settings_ops_egress_proxy_accepts_proxy_urls(url: str) -> None:
    assert load_settings(env={"TOLLWAY_EGRESS_PROXY": url}).egress_proxy == url


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("socks5://u:secret-pw@proxy:1080", "http:// or https://"),
        ("proxy.internal:3128", "http:// or https://"),
        ("http://u:secret-pw@proxy:99999", "invalid port"),
        ("http://u:secret-pw@proxy:3128/path", "without a path"),
    ],
)
def test_settings_ops_egress_proxy_refuses_other_urls_without_echoing_them(url: str, needle: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env={"TOLLWAY_EGRESS_PROXY": url})
    assert needle in str(caught.value) and "secret-pw" not in str(caught.value)


def test_settings_ops_max_request_body_bytes_must_be_positive() -> None:
    with pytest.raises(SettingsError, match="TOLLWAY_MAX_REQUEST_BODY_BYTES"):
        load_settings(env={"TOLLWAY_MAX_REQUEST_BODY_BYTES": "0"})

"""Country lookup from a local MaxMind database, and how it combines with a trusted CDN header."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.pipeline.facts import request_facts
from gateway.pipeline.geoip import CountryDatabase
from gateway.settings import SettingsError, load_settings
from keys.restrictions import parse_networks
from tests.fakes.geoip import write_country_db


@pytest.fixture
def countries(tmp_path: Path) -> Iterator[CountryDatabase]:
    path = write_country_db(
        tmp_path / "country.mmdb",
        {
            "203.0.113.0/24": {"country": {"iso_code": "de"}, "registered_country": {"iso_code": "NL"}},
            "2001:db8::/32": {"registered_country": {"iso_code": "FR"}},
            "198.51.100.0/24": {"continent": {"code": "EU"}},
        },
    )
    database = CountryDatabase(str(path))
    yield database
    database.close()


@pytest.mark.parametrize(
    ("address", "country"),
    [
        ("203.0.113.9", "DE"),  # country wins over registered_country, upper-cased
        ("2001:db8::1", "FR"),  # only registered_country (anonymous/satellite ranges)
        ("198.51.100.1", None),  # a record without any country
        ("192.0.2.1", None),  # not in the database
    ],
)
def test_country_of(countries: CountryDatabase, address: str, country: str | None) -> None:
    assert countries.country_of(ipaddress.ip_address(address)) == country


def test_request_facts_use_the_database_for_the_real_client(countries: CountryDatabase) -> None:
    proxies = parse_networks(["10.0.0.0/8"], strict=False)
    facts = request_facts(
        "10.0.0.2",
        {"x-forwarded-for": "192.0.2.7, 203.0.113.9"},
        trusted_proxies=proxies,
        country_header="cf-ipcountry",
        fail_closed_on_unknown_country=True,
        country_lookup=countries.country_of,
    )
    assert str(facts.client_ip) == "203.0.113.9" and facts.country == "DE"


def test_a_trusted_country_header_wins_and_an_untrusted_one_is_ignored(countries: CountryDatabase) -> None:
    proxies = parse_networks(["10.0.0.0/8"], strict=False)
    common: dict[str, Any] = {
        "trusted_proxies": proxies,
        "country_header": "cf-ipcountry",
        "fail_closed_on_unknown_country": True,
        "country_lookup": countries.country_of,
    }
    via_cdn = request_facts("10.0.0.2", {"x-forwarded-for": "203.0.113.9", "cf-ipcountry": "JP"}, **common)
    assert via_cdn.country == "JP"
    forged = request_facts("203.0.113.9", {"cf-ipcountry": "JP"}, **common)
    assert forged.country == "DE"  # a client cannot pick its own country
    unknown = request_facts("192.0.2.1", {}, **common)
    assert unknown.country is None


def test_geoip_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(env={}, geoip_database=str(tmp_path / "missing.mmdb"))
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"not a maxmind database")
    with pytest.raises(SettingsError, match="cannot open"):
        CountryDatabase(str(garbage))

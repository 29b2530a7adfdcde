"""Country of an IP address from a local MaxMind-format database (GeoLite2/GeoIP2 Country or City).

The file is memory-mapped once at startup and looked up in-process (a few microseconds with the
C extension), so the request path never waits on the network or on disk reads it can avoid.
Records name the country under ``country.iso_code``; anonymous ranges and some satellite
providers carry only ``registered_country``, which we fall back to.
"""

from __future__ import annotations

from typing import Any

import maxminddb

from gateway.settings import SettingsError
from keys.restrictions import IPAddress


class CountryDatabase:
    def __init__(self, path: str) -> None:
        try:
            self._reader = maxminddb.open_database(path, maxminddb.MODE_AUTO)
        except (OSError, maxminddb.InvalidDatabaseError) as error:
            raise SettingsError(f"geoip_database: cannot open {path!r} as a MaxMind database: {error}") from error

    def country_of(self, address: IPAddress) -> str | None:
        try:
            record: Any = self._reader.get(address)
        except (ValueError, maxminddb.InvalidDatabaseError):
            return None  # an IPv6 lookup in an IPv4-only database, or a damaged record
        if not isinstance(record, dict):
            return None
        for field in ("country", "registered_country"):
            entry = record.get(field)
            if isinstance(entry, dict):
                code = entry.get("iso_code")
                if isinstance(code, str) and len(code) == 2:
                    return code.upper()
        return None

    def close(self) -> None:
        self._reader.close()

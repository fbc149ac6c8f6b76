"""Country of an IP address, from an offline database (risk's decisions, and identity
refusing a blocked country before it asks risk anything).

By default the database bundled with the ``iptocc`` package (regional registry
delegations); a MaxMind-format database (GeoLite2/GeoIP2 Country) when a path is
configured, for operators who keep one current.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import iptocc
import maxminddb


class CountryLookup(Protocol):
    def __call__(self, ip: str) -> str: ...


def bundled_lookup(ip: str) -> str:
    return iptocc.country_code(ip) or ""


class MaxMindLookup:
    def __init__(self, path: Path) -> None:
        self._reader = maxminddb.open_database(str(path))

    def __call__(self, ip: str) -> str:
        record: Any = self._reader.get(ip)
        if not isinstance(record, dict):
            return ""
        country = record.get("country") or record.get("registered_country") or {}
        return str(country.get("iso_code", "")) if isinstance(country, dict) else ""

    def close(self) -> None:
        self._reader.close()


def country_lookup(database: Path | None) -> CountryLookup:
    return MaxMindLookup(database) if database else bundled_lookup

"""Grouping of IP addresses: attackers rotate addresses inside the blocks they rent."""

from __future__ import annotations

import ipaddress


def subnet_of(ip: str) -> str:
    """The /24 of an IPv4 address or the /48 of an IPv6 address, in CIDR form."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def normalised(ip: str) -> str:
    """One spelling per address, so counters and queries agree (IPv6 has many)."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)

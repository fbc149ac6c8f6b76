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


# Blocking more than this at once is refused: a typo like 0.0.0.0/0 would refuse everyone.
BROADEST_PREFIX = {4: 8, 6: 16}


def network_of(text: str) -> str:
    """One spelling of a CIDR network with its host bits zero; ValueError otherwise.

    An IPv4-mapped IPv6 network is written as the IPv4 network it maps, since
    addresses are compared in their IPv4 form.
    """
    network = ipaddress.ip_network(text.strip(), strict=True)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    if network.prefixlen < BROADEST_PREFIX[network.version]:
        raise ValueError(f"{network} is broader than /{BROADEST_PREFIX[network.version]}")
    return str(network)


class NetworkSet:
    """Networks of any prefix length, looked up in one set probe per distinct length.

    Built once per policy version, so an assessment pays a parse of its address and
    a few dictionary probes, however many networks the policy holds.
    """

    def __init__(self, networks: frozenset[str]) -> None:
        self._by_length: dict[tuple[int, int], dict[int, str]] = {}
        for text in networks:
            network = ipaddress.ip_network(text, strict=False)
            key = (network.version, network.prefixlen)
            self._by_length.setdefault(key, {})[int(network.network_address)] = text

    def __bool__(self) -> bool:
        return bool(self._by_length)

    def find(self, ip: str) -> str | None:
        """The network holding ``ip`` (a normalised address), or None."""
        if not self._by_length or not ip:
            return None
        address = ipaddress.ip_address(ip)
        value, bits = int(address), address.max_prefixlen
        for (version, length), networks in self._by_length.items():
            if version != address.version:
                continue
            mask = ((1 << length) - 1) << (bits - length)
            found = networks.get(value & mask)
            if found is not None:
                return found
        return None

"""This machine's network interfaces (through ifaddr, which zeroconf already uses)."""

from __future__ import annotations

import ipaddress

import ifaddr

__all__ = ["lan_address", "lan_ipv4_addresses"]


def lan_ipv4_addresses() -> list[str]:
    """IPv4 addresses of this machine that others on a LAN could reach, private ones first."""
    found: list[ipaddress.IPv4Address] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                address = ipaddress.IPv4Address(ip.ip)
                if not (address.is_loopback or address.is_link_local or address.is_unspecified):
                    found.append(address)
    return [str(a) for a in sorted(found, key=lambda a: (not a.is_private, a))]


def lan_address() -> str | None:
    """The address to put in a pairing code when we listen on every interface."""
    addresses = lan_ipv4_addresses()
    return addresses[0] if addresses else None

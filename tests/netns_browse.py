"""Run inside a network namespace: print every p2pmoments mDNS record seen, as JSON."""

from __future__ import annotations

import json
import sys
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

SERVICE = "_p2pmoments._tcp.local."


def main() -> None:
    interface, seconds = sys.argv[1], float(sys.argv[2])
    zc = Zeroconf(interfaces=[interface], ip_version=IPVersion.V4Only)
    names: set[str] = set()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        names.add(name)

    browser = ServiceBrowser(zc, SERVICE, handlers=[on_change])
    time.sleep(seconds)  # a browsing window: this helper only watches
    records = []
    for name in sorted(names):
        info = ServiceInfo(SERVICE, name)
        if info.request(zc, 3000):
            records.append(
                {
                    "name": name,
                    "server": info.server,
                    "port": info.port,
                    "addresses": info.parsed_addresses(),
                    "txt": {
                        k.decode(): (v or b"").decode("latin-1")
                        for k, v in (info.properties or {}).items()
                    },
                }
            )
    browser.cancel()
    zc.close()
    print(json.dumps(records))


if __name__ == "__main__":
    main()

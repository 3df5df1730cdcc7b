"""Discovery: finding other hubs of the fleet on the local network.

- `hints.py`: pure. `PeerHint` (a node id, its fleet id, multiaddrs, version), `txt_for` (the TXT
  records a hub announces) and `hint_from_service` (a resolved service's TXT record back into a
  hint, or None for junk; bounded). `SERVICE_TYPE` is `_democratic-ai._tcp.local.`.
- `mdns.py`: `MdnsDiscovery`, python-zeroconf's AsyncZeroconf on the hub's loop: registers this
  hub on the named interfaces only, browses and resolves the others, calls `on_hint` for nodes of
  the same fleet. A hint is never trust: the link checks the node certificate.
"""

from federation.discovery.hints import SERVICE_TYPE, PeerHint, hint_from_service, txt_for
from federation.discovery.mdns import DiscoveryError, MdnsDiscovery

__all__ = ["SERVICE_TYPE", "DiscoveryError", "MdnsDiscovery", "PeerHint", "hint_from_service", "txt_for"]

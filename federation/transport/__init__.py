"""libp2p for the federation: the only package that imports ``libp2p``, ``trio`` and ``multiaddr``.

- ``node.py``     ``Libp2pNode``: the host in its trio thread, one framed link stream per peer, ping;
                  ``LINK_PROTOCOL``
- ``bridge.py``   ``Bridge``/``TrioThread``: the one asyncio <-> trio crossing
- ``host.py``     building the libp2p host (Noise + yamux only, our key, no auto-dial) and its quirks
- ``framing.py``  4-byte length-prefixed frames, sans-IO
- ``errors.py``   ``TransportError``; unwrapping trio's exception groups
"""

from federation.transport.errors import TransportError
from federation.transport.node import LINK_PROTOCOL, Libp2pNode

__all__ = ["LINK_PROTOCOL", "Libp2pNode", "TransportError"]

"""Federation: hubs of one fleet find each other, trust only their fleet, and forward what they cannot serve.

identity.py — the node key (state dir, 0600) and its libp2p peer id.
fleet.py — the fleet key, node certificates, and ``FleetTrust.admit``: the one decision on whether
    a peer is of our fleet.
sealing.py — signed messages (``seal`` / ``open_sealed``) and the bounded ``ReplayGuard``; sans-IO.
adverts.py — ``Advert``: a hub's capabilities, load and addresses, checked field by field; sans-IO.
peers.py — ``PeerTable``: liveness, adverts and their expiry, the choice of peer, backoff, redial; sans-IO.
wire.py — the frames of a link (hello, advert, call, part, result, error, cancel) and their bounds.
links.py — ``Links``: trust per link (the hello), calls multiplexed by id in both directions.
forwarder.py — ``PeerForwarder``, the pipeline's ``Forwarder`` port: choose a peer, seal, fail over.
serving.py — ``PeerCalls``: a peer's call checked (assertion, loop, hops, policy) and run here.
service.py — ``Federation``: the parts assembled for one hub, and the task that tends the fleet.
transport/ — libp2p (Noise, yamux, identify, ping) in its own trio thread behind one bridge; the
    only code that imports libp2p or trio.
discovery/ — mDNS with python-zeroconf on the hub's loop; parsing its records is pure.
sync/ — usage to the central billing node: sealed batches, a site's outbox, the centre's receiver,
    the HTTPS fallback.

Only ``daemon.core`` and runtime's leaves are imported from the daemon (import-linter checks it);
``runtime/hub.py`` wires a ``Federation`` in when the hub holds a fleet certificate.
"""

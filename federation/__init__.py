"""Federation (node identity, mDNS, libp2p, usage sync): not built yet.

The pipeline's federation hook (daemon.core.pipeline.NoPeers) answers CAPABILITY_NOT_FOUND
for actions no local module has, until this package provides a forwarder.
"""

"""``democratic-ai node id`` and ``fleet init | sign | join``: a hub's key and its fleet membership.

The fleet key lives on the operator's machine, never on a hub: ``fleet init`` makes it,
``fleet sign`` uses it to certify one node's public key (which ``node id`` prints on that
node), and ``fleet join`` installs the certificate in that node's state dir.  Joining checks
the certificate is the fleet's and is for this node's own key; a hub reads it at its next start.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from daemon.cli.errors import CliError
from daemon.cli.output import note, print_json, print_table
from daemon.cli.parsing import SubParsers, add_command, add_group
from daemon.core.i18n import Text, t
from daemon.runtime.config import state_dir_of
from daemon.runtime.files import atomic_write

#: a certificate file ``fleet join`` reads; a real one is well under 1 KiB
MAX_CERT_FILE = 8192


def _read_input(path: str, what: Text) -> bytes:
    """A file the operator named, bounded; a missing or unreadable one is bad input (exit 2)."""
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_CERT_FILE + 1)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise CliError(t("cli.cli_fleet.cannot_read", what=what, path=path, strerror=exc.strerror)) from None
    if len(data) > MAX_CERT_FILE:
        raise CliError(t("cli.cli_fleet.over_bytes_not", path=path, max_cert_file=MAX_CERT_FILE, what=what))
    return data


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def cmd_node_id(args: argparse.Namespace) -> int:
    """This hub's node id and public key, making the node key in the state dir if absent."""
    from federation.identity import IdentityError, NodeIdentity

    try:
        identity = NodeIdentity.load_or_create(state_dir_of(args))
    except IdentityError as exc:
        raise CliError(t("cli.relayed", message=exc)) from None
    if args.json:
        print_json({"node_id": identity.peer_id, "public_key": identity.public_key_b64})
    else:
        print_table(("NODE ID", "PUBLIC KEY"), [(identity.peer_id, identity.public_key_b64)])
    return 0


def cmd_fleet_init(args: argparse.Namespace) -> int:
    """A new fleet key pair in ``--out``; prints the fleet id."""
    from federation.fleet import FleetKey
    from federation.identity import IdentityError

    try:
        fleet = FleetKey.generate(args.name)
        key_path, pub_path = fleet.save(Path(args.out))
    except IdentityError as exc:
        raise CliError(t("cli.relayed", message=exc)) from None
    note(t("cli.fleet.initialised", name=fleet.name, key_path=key_path, pub_path=pub_path))
    print(fleet.fleet_id)
    return 0


def cmd_fleet_sign(args: argparse.Namespace) -> int:
    """A node certificate for ``--node``, signed with ``--fleet-key``, written to ``--out``."""
    from federation.fleet import FleetKey
    from federation.identity import IdentityError, public_key_from_text

    if args.days <= 0:
        raise CliError(t("cli.cli_fleet.days_positive_number_days"))
    try:
        fleet = FleetKey.load(Path(args.fleet_key))
        node_key = public_key_from_text(args.node)
        cert = fleet.sign_node(node_key, args.name, role=args.role, days=args.days, now=time.time())
    except IdentityError as exc:
        raise CliError(t("cli.relayed", message=exc)) from None
    atomic_write(Path(args.out), cert.to_text().encode())
    note(t("cli.fleet.signed", node_id=cert.node_id, site=cert.site, role=cert.role, fleet_id=cert.fleet_id,
           until=_when(cert.expires_at), out=args.out))
    return 0


def cmd_fleet_join(args: argparse.Namespace) -> int:
    """Install the certificate in ``--cert`` after checking it is for this node; prints the fleet id."""
    from federation.fleet import NodeCertificate, install_certificate
    from federation.identity import IdentityError, NodeIdentity

    text = _read_input(args.cert, t("cli.what.certificate"))
    state_dir = state_dir_of(args)
    try:
        identity = NodeIdentity.load_or_create(state_dir)
        path = install_certificate(state_dir, text, identity, now=time.time())
        cert = NodeCertificate.from_text(text)
    except IdentityError as exc:
        raise CliError(t("cli.cli_fleet.message", cert=args.cert, exc=exc)) from None
    note(t("cli.fleet.joined", name=cert.fleet_name, site=cert.site, role=cert.role, until=_when(cert.expires_at),
           path=path))
    print(cert.fleet_id)
    return 0


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``node id`` and ``fleet init | sign | join``."""
    node = add_group(subparsers, "node", "this hub's node identity")
    p = add_command(node, "id", parents, "this hub's node id and public key (makes the node key if absent)",
                    cmd_node_id)
    p.add_argument("--json", action="store_true", help='{"node_id", "public_key"}')

    fleet = add_group(subparsers, "fleet", "fleet keys and node certificates")
    p = add_command(fleet, "init", parents, "make a fleet key pair (on the operator's machine)", cmd_fleet_init)
    p.add_argument("--out", required=True, help="directory for fleet.key (0600) and fleet.pub")
    p.add_argument("--name", default="fleet", help="the fleet's name (default: fleet)")
    p = add_command(fleet, "sign", parents, "certify a node's key as a site of the fleet", cmd_fleet_sign)
    p.add_argument("--fleet-key", required=True, help="the fleet.key file fleet init wrote")
    p.add_argument("--node", required=True, help="the node's public key (base64) or node id, from `node id`")
    p.add_argument("--name", required=True, help="the site's name")
    p.add_argument("--role", choices=("site", "central"), default="site")
    p.add_argument("--days", type=int, default=365, help="days the certificate is valid (default: 365)")
    p.add_argument("--out", required=True, help="the certificate file to write")
    p = add_command(fleet, "join", parents, "install this node's certificate into the state dir", cmd_fleet_join)
    p.add_argument("--cert", required=True, help="the certificate fleet sign wrote for this node")

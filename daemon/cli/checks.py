"""What ``democratic-ai doctor`` checks, one function per concern: paths and values in, findings out.

Each check returns :class:`Finding` records (``ok``, ``warn`` or ``error``, what was found, what
to do about it) and never prints or exits: doctor.py runs them, gathers what they need from the
machine (a bound port, a running hub's /health, ``systemd-analyze``) and prints.  An ``error`` is
something the hub cannot serve with or an operator must fix now; a ``warn`` works today but
should be looked at.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509

from daemon.metering.ledger.chain import VerifyResult
from daemon.runtime.tls import RENEW_BEFORE
from modules.model_files import ModelFile, ModelLoadError, verify

if TYPE_CHECKING:  # federation (pynacl, msgpack) loads only when doctor runs, not with every CLI command
    from daemon.metering.central import SiteStatus
    from federation.identity import NodeIdentity
    from federation.sync.outbox import SyncState

Level = Literal["ok", "warn", "error"]

#: state-dir files only the hub's user may read: keys, the JWT secret, password hashes, the ledger
SECRET_FILES = ("bootstrap-admin.key", "jwt.secret", "tls/http3-key.pem", "tenancy.db", "ledger.db")
#: the unit's ``systemd-analyze security`` exposure above which doctor warns (issue 12's bar)
UNIT_SCORE_MAX = 2.0
#: a fleet certificate ending sooner than this is a warning: time for the operator to sign a new one
CERT_RENEW_DAYS = 30
#: a peer's clock this far from ours (seconds) is a warning; past federation.sealing.MAX_SKEW_S, an error
SKEW_WARN_S = 5.0
#: a site's sync error this recent is an error (the outbox retries within 60 s, so an older one is from a stopped
#: hub); its oldest unacknowledged row older than this, a warning
SYNC_STALE_S = 300.0
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_SCORE = re.compile(r"Overall exposure level for \S+:\s*([0-9.]+)")


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: its level, what was checked and found, and what to do (empty when ok)."""

    level: Level
    what: str
    fix: str = ""

    def line(self) -> str:
        """``error  what: fix`` as doctor prints it, the level padded so the lines align."""
        return f"{self.level:<5}  {self.what}" + (f"; to do: {self.fix}" if self.fix else "")

    def to_dict(self) -> dict[str, str]:
        """The ``--json`` form of the finding."""
        return {"level": self.level, "what": self.what, "fix": self.fix}


def check_modes(state_dir: Path, *, euid: int) -> list[Finding]:
    """The state dir is 0700 and owned by ``euid``; each secret that exists is 0600 and owned alike.

    A secret readable by others inside a 0700 dir is a warning (nobody else can reach it today;
    a later chmod of the dir would expose it); inside an open dir it is an error.
    """
    try:
        st = state_dir.stat()
    except FileNotFoundError:
        return [Finding("warn", f"state dir {state_dir} does not exist",
                        "the hub makes it at first start; check --state-dir if one was expected")]
    findings: list[Finding] = []
    dir_open = bool(st.st_mode & 0o077)
    if dir_open:
        findings.append(Finding("error", f"state dir {state_dir} is mode {_mode(st.st_mode)}, open to others",
                                f"chmod 700 {state_dir}"))
    if st.st_uid != euid:
        findings.append(Finding("warn", f"state dir {state_dir} is owned by uid {st.st_uid}, not this user "
                                f"(uid {euid})", "run doctor as the hub's user, or chown the dir to it"))
    for name in SECRET_FILES:
        path = state_dir / name
        try:
            fst = path.lstat()
        except FileNotFoundError:
            continue
        if fst.st_mode & 0o077:
            level: Level = "error" if dir_open else "warn"
            findings.append(Finding(level, f"{path} is mode {_mode(fst.st_mode)}, readable beyond its owner",
                                    f"chmod 600 {path}"))
        if fst.st_uid != st.st_uid:
            findings.append(Finding("error", f"{path} is owned by uid {fst.st_uid}, the state dir by {st.st_uid}",
                                    f"chown {st.st_uid} {path}"))
    if not findings:
        findings.append(Finding("ok", f"state dir {state_dir}: 0700, secrets 0600, one owner"))
    return findings


def check_models(files: dict[str, list[ModelFile]], missing: dict[str, str],
                 optional: frozenset[str] = frozenset({"text.summarize"})) -> list[Finding]:
    """Every enabled module's model files exist and match their manifest's sha256.

    ``files`` maps a module to its files, ``missing`` a module to why its files could not be
    located.  A module in ``optional`` runs without them (text.summarize falls back to frequency
    scoring), so a problem there is a warning.
    """
    findings: list[Finding] = []
    for module, why in sorted(missing.items()):
        findings.append(Finding("warn" if module in optional else "error", f"module {module}: {why}",
                                "reinstall the hub (its package ships the model files)"))
    for module, models in sorted(files.items()):
        if not models:
            continue
        bad = []
        for model in models:
            try:
                verify(model)
            except ModelLoadError as exc:
                bad.append(str(exc))
        unverified = [str(m.path) for m in models if m.sha256 is None]
        for problem in bad:
            findings.append(Finding("warn" if module in optional else "error", f"module {module}: {problem}",
                                    "reinstall the hub (its package ships the model files), or fix the "
                                    f'modules.options."{module}" model path and sha256'))
        if not bad and unverified:
            findings.append(Finding("warn", f"module {module}: {', '.join(unverified)} has no sha256 to check",
                                    f'set modules.options."{module}".sha256'))
        elif not bad:
            findings.append(Finding("ok", f"module {module}: {len(models)} model file(s), sha256 as the manifest"))
    return findings


def check_ledger(result: VerifyResult, path: Path) -> Finding:
    """``ledger verify``'s result as a finding; a ledger not yet made is a warning, not an error."""
    if result.ok:
        return Finding("ok", f"ledger {path}: chain verified ({result.count} entries)")
    if not path.exists():
        return Finding("warn", f"ledger {path} does not exist", "normal before the hub's first call")
    where = f" at seq {result.first_bad_seq}" if result.first_bad_seq else ""
    return Finding("error", f"ledger {path} does not verify{where}: {result.reason}",
                   "stop the hub and restore the last good backup (democratic-ai restore)")


def check_certificate(path: Path, now: datetime.datetime, *, self_signed: bool) -> Finding:
    """A certificate the doors serve: unreadable or expired is an error, ending within RENEW_BEFORE a warning."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        if self_signed and isinstance(exc, FileNotFoundError):
            return Finding("ok", f"TLS: {path} not made yet (the hub makes it at start)")
        return Finding("error", f"TLS certificate {path} cannot be read: {exc}", "set a valid PEM certificate")
    ends = cert.not_valid_after_utc
    renew = ("restart the hub: it makes a new self-signed one at start" if self_signed
             else "renew it and restart the hub")
    if ends <= now:
        return Finding("error", f"TLS certificate {path} expired on {ends:%Y-%m-%d}", renew)
    if ends - now < RENEW_BEFORE:
        return Finding("warn", f"TLS certificate {path} ends on {ends:%Y-%m-%d}, in {(ends - now).days} days",
                       renew)
    return Finding("ok", f"TLS certificate {path} valid until {ends:%Y-%m-%d}")


def check_port(door: str, listen: str, *, bind_error: str | None, hub_ports: set[int], hub_healthy: bool,
               port: int) -> Finding:
    """Whether a door's port is free, held by the running hub (its /health answering), or taken by another."""
    if port == 0:
        return Finding("ok", f"{door} {listen}: port 0, a free port is picked at start")
    if bind_error is None:
        return Finding("ok", f"{door} {listen}: free")
    if port in hub_ports and hub_healthy:
        return Finding("ok", f"{door} {listen}: held by the running hub (its /health answers)")
    if port in hub_ports:
        return Finding("error", f"{door} {listen}: held by a hub whose /health does not answer",
                       "look at `systemctl status democratic-ai` and its journal")
    return Finding("error", f"{door} {listen}: cannot be bound ({bind_error})",
                   "stop what holds the port (`ss -ltnup`), or change the listen address")


def parse_security_score(output: str) -> float | None:
    """The exposure from ``systemd-analyze security`` output (``Overall exposure level for x: 8.3 EXPOSED``)."""
    match = _SCORE.search(output)
    return float(match.group(1)) if match else None


def check_unit_score(unit: Path, score: float | None, output: str) -> Finding:
    """The unit's exposure: above UNIT_SCORE_MAX a warning, unreadable output a warning that shows it."""
    if score is None:
        return Finding("warn", f"unit {unit}: systemd-analyze gave no score ({output.strip()[-200:]})",
                       f"run `systemd-analyze security --offline=yes {unit}`")
    if score > UNIT_SCORE_MAX:
        return Finding("warn", f"unit {unit}: exposure {score} (more than {UNIT_SCORE_MAX})",
                       "install the hardened unit the package ships; drop-ins may have weakened it")
    return Finding("ok", f"unit {unit}: exposure {score}")


def check_node_key(path: Path) -> tuple[Finding, NodeIdentity | None]:
    """The node key and the node id it gives; the key too, for the certificate check (None if unusable).

    Absent is a warning (the hub makes it at first start); readable beyond its owner, unreadable or
    not a 32-byte seed is an error: the key is who this hub is to its fleet.
    """
    from federation.identity import SEED_BYTES, NodeIdentity
    try:
        st = path.lstat()
    except FileNotFoundError:
        return Finding("warn", f"node key {path} does not exist: this hub has no node id yet",
                       "nothing: it is made at first start (`democratic-ai node id` makes it now)"), None
    except OSError as exc:
        return Finding("error", f"node key {path} cannot be read ({exc.strerror or exc})",
                       "run doctor as the hub's user"), None
    if not stat.S_ISREG(st.st_mode):
        return Finding("error", f"node key {path} is not a file", f"remove {path}: the hub makes a new key "
                       "(and a new node id, which the fleet must sign again)"), None
    try:
        with path.open("rb") as handle:
            seed = handle.read(SEED_BYTES + 1)
    except OSError as exc:
        return Finding("error", f"node key {path} cannot be read ({exc.strerror or exc})",
                       "run doctor as the hub's user"), None
    if len(seed) != SEED_BYTES:
        return Finding("error", f"node key {path} is {len(seed)} bytes, not a {SEED_BYTES}-byte Ed25519 seed",
                       "restore it from a backup (democratic-ai restore), or remove it for a new node id "
                       "that the fleet must sign again"), None
    identity = NodeIdentity(seed)
    if st.st_mode & 0o077:
        return Finding("error", f"node key {path} is mode {_mode(st.st_mode)}, readable beyond its owner "
                       f"(node id {identity.peer_id})", f"chmod 600 {path}"), identity
    return Finding("ok", f"node key {path}: 0600, node id {identity.peer_id}"), identity


def check_fleet_certificate(path: Path, identity: NodeIdentity | None, now: float, *,
                            configured: bool = False, trusted_keys: bool = False) -> Finding:
    """The node certificate: absent is fine (no fleet); bad, not this node's or expired is an error.

    ``configured`` says ``[fleet] cert`` names ``path``: a file named there and missing is a warning,
    since the operator meant the hub to join a fleet.  Ending within CERT_RENEW_DAYS is a warning.
    ``trusted_keys`` says ``[fleet] trusted_keys`` is set: without a certificate those are the peers.
    """
    from federation.fleet import CERT_SKEW_S, SECONDS_A_DAY, load_certificate
    from federation.identity import IdentityError
    if not path.exists():
        alone = ("only the nodes of [fleet] trusted_keys are this hub's peers" if trusted_keys
                 else "this hub federates with nobody")
        if configured:
            return Finding("warn", f"[fleet] cert names {path}, which does not exist: {alone}",
                           "correct [fleet] cert, or remove it and install the certificate with "
                           "`democratic-ai fleet join --cert FILE`")
        return Finding("ok", f"no fleet certificate: {alone}")
    renew = ("ask the fleet's operator for a new certificate (`democratic-ai fleet sign`) and install it with "
             "`democratic-ai fleet join --cert FILE`")
    try:
        cert = load_certificate(path)
    except IdentityError as exc:  # unreadable, not a certificate, or not signed by its fleet key
        return Finding("error", f"fleet certificate {exc}", renew)
    fleet = f"fleet {cert.fleet_name} ({cert.fleet_id})"
    if identity is None or cert.node_public_key != identity.public_key:
        this = f"this node {identity.peer_id}" if identity is not None else "this hub's node key (none usable)"
        return Finding("error", f"fleet certificate {path} ({fleet}) is for node {cert.node_id}, not {this}",
                       "install the certificate signed for this node's key (`democratic-ai node id` prints it): "
                       + renew)
    ends = _day(cert.expires_at)
    if now >= cert.expires_at:
        return Finding("error", f"fleet certificate {path} ({fleet}) expired on {ends}: peers refuse this hub",
                       renew)
    if now < cert.issued_at - CERT_SKEW_S:
        return Finding("error", f"fleet certificate {path} ({fleet}) is valid only from {_day(cert.issued_at)}: "
                       "this machine's clock is behind the operator's", "set the clock right (NTP)")
    left = cert.expires_at - now
    if left < CERT_RENEW_DAYS * SECONDS_A_DAY:
        return Finding("warn", f"fleet certificate {path} ({fleet}) ends on {ends}, in {int(left // SECONDS_A_DAY)}"
                       " days", renew)
    return Finding("ok", f"{fleet}: site {cert.site}, role {cert.role}, certificate valid until {ends}")


def check_trusted_keys(keys: list[str]) -> list[Finding]:
    """``[fleet] trusted_keys``: each a base64 public key or a node id; one that is not stops the hub."""
    from federation.identity import IdentityError, public_key_from_text
    findings = []
    for index, text in enumerate(keys):
        try:
            public_key_from_text(text)
        except IdentityError as exc:
            findings.append(Finding("error", f"[fleet] trusted_keys[{index}]: {exc}",
                                    "write each as the public key or node id `democratic-ai node id` prints "
                                    "on that hub (the hub refuses to start with this one)"))
    if keys and not findings:
        findings.append(Finding("ok", f"[fleet] trusted_keys: {len(keys)} node key(s) trusted without a certificate"))
    return findings


def parse_tcp_multiaddr(text: str, *, dns: bool = False) -> tuple[str, int, str]:
    """``(host, port, peer id or "")`` of ``/ip4|ip6/<ip>/tcp/<port>[/p2p/<node id>]``; ValueError saying why.

    With ``dns``, ``/dns|dns4|dns6/<name>`` may name the host too (a dialled address; a listen
    address must be an IP).  Plain text parsing: the CLI does not load libp2p.
    """
    from federation.identity import IdentityError, public_key_from_peer_id
    parts = text.split("/")
    if len(parts) not in (5, 7) or parts[0] != "" or parts[3] != "tcp":
        raise ValueError("it must look like /ip4/<address>/tcp/<port>" + ("/p2p/<node id>" if dns else ""))
    kind, host, port_text = parts[1], parts[2], parts[4]
    if kind in ("ip4", "ip6"):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address") from None
        if ip.version != int(kind[-1]):
            raise ValueError(f"{host} is not an IPv{kind[-1]} address")
    elif not (dns and kind in ("dns", "dns4", "dns6") and _HOSTNAME.fullmatch(host)):
        raise ValueError(f"/{kind}/{host} is not " + ("an IP address or a DNS name" if dns else "an IP address"))
    if not port_text.isdecimal() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{port_text!r} is not a TCP port")
    peer_id = ""
    if len(parts) == 7:
        if parts[5] != "p2p":
            raise ValueError(f"/{parts[5]}/ where /p2p/<node id> was expected")
        peer_id = parts[6]
        try:
            public_key_from_peer_id(peer_id)
        except IdentityError:
            raise ValueError(f"{peer_id[:60]!r} is not a node id (12D3KooW...)") from None
    return host, int(port_text), peer_id


def check_p2p_listen(listen: str, *, enabled: bool, federates: bool, bind_error: str | None,
                     hub_ports: set[int], hub_healthy: bool) -> Finding:
    """``[p2p] listen``: well-formed, and (when the hub would federate) free or held by the running hub."""
    if not enabled:
        return Finding("ok", "p2p: off ([p2p] enabled = false): this hub federates with nobody")
    try:
        _, port, peer_id = parse_tcp_multiaddr(listen)
    except ValueError as exc:  # it stops the hub only once it federates
        return Finding("error" if federates else "warn", f"[p2p] listen {listen!r}: {exc}",
                       "write it like /ip4/0.0.0.0/tcp/4701")
    if peer_id:
        return Finding("error" if federates else "warn", f"[p2p] listen {listen!r} names a node id",
                       "drop the /p2p/ part: a hub listens as its own node key")
    if not federates:
        return Finding("ok", f"p2p {listen}: not started (no fleet certificate or trusted keys)")
    return check_port("p2p", listen, bind_error=bind_error, hub_ports=hub_ports, hub_healthy=hub_healthy, port=port)


def check_bootstrap(addrs: list[str], own_id: str | None) -> list[Finding]:
    """``[p2p] bootstrap``: each a multiaddr ending in a node id; this node's own id is a warning."""
    findings = []
    for index, addr in enumerate(addrs):
        try:
            _, _, peer_id = parse_tcp_multiaddr(addr, dns=True)
        except ValueError as exc:
            findings.append(Finding("error", f"[p2p] bootstrap[{index}] {addr!r}: {exc}; the hub can never dial it",
                                    "write it like /ip4/192.0.2.10/tcp/4701/p2p/12D3KooW... (the peer's "
                                    "address and the node id `democratic-ai node id` prints there)"))
            continue
        if not peer_id:
            findings.append(Finding("error", f"[p2p] bootstrap[{index}] {addr!r} names no node id",
                                    "end it with /p2p/<node id> (`democratic-ai node id` prints it on that hub)"))
        elif peer_id == own_id:
            findings.append(Finding("warn", f"[p2p] bootstrap[{index}] {addr!r} is this node itself",
                                    "remove it: a hub does not dial itself"))
    if addrs and not findings:
        findings.append(Finding("ok", f"[p2p] bootstrap: {len(addrs)} peer address(es), well-formed"))
    return findings


def check_peers(peers: list[dict[str, Any]] | None, *, hub_running: bool, bootstrap: bool) -> list[Finding]:
    """Which peers the running hub links to, from its ``peers.json`` (None: absent or empty).

    A hub not running says nothing about its peers (ok); one running with ``[p2p] bootstrap``
    set and no peer yet is a warning; a peer whose link is down is a warning naming its site and
    when the hub tries it again; the peers up are one ok line with their round trips.
    """
    if not hub_running:
        return [Finding("ok", "peers and clock skew: unknown, the hub is not running (it writes peers.json)")]
    if not peers:
        if bootstrap:
            return [Finding("warn", "no peer linked yet, though [p2p] bootstrap names some",
                            "check each bootstrap address and node id, that the peer runs and its p2p port is "
                            "open to this hub, and that both hold certificates of one fleet (`democratic-ai peers` "
                            "there)")]
        return [Finding("ok", "no peer linked yet (no [p2p] bootstrap: peers come from mDNS or dial this hub)")]
    findings = []
    up = []
    for peer in peers:
        name = _peer_name(peer)
        if peer.get("state") == "up":
            rtt = peer.get("rtt_ms")
            up.append(f"{name} ({rtt:.0f} ms)" if isinstance(rtt, int | float) else f"{name} (rtt not measured)")
            continue
        retry = peer.get("retry_in_s")
        when = (f"the hub tries it again in {retry:.0f} s" if isinstance(retry, int | float)
                else "the hub redials it")
        findings.append(Finding("warn", f"peer {name} ({peer.get('node_id', '?')}) is down: {when}",
                                f"check that the hub at {name} runs and its p2p port is reachable from here"))
    if up:
        findings.append(Finding("ok", f"{len(up)} peer(s) up: {', '.join(up)}"))
    return findings


def check_clock_skew(peers: list[dict[str, Any]]) -> list[Finding]:
    """Each peer's ``clock_skew_s`` (its clock minus ours): past MAX_SKEW_S an error, past SKEW_WARN_S a warning.

    Signed fleet messages more than MAX_SKEW_S from the receiver's clock are refused, so such a
    peer cannot talk with this hub at all.  Peers without a measured skew are left out; with none
    measured there is nothing to say.
    """
    from federation.sealing import MAX_SKEW_S

    measured = [(float(p["clock_skew_s"]), _peer_name(p)) for p in peers
                if isinstance(p.get("clock_skew_s"), int | float) and not isinstance(p.get("clock_skew_s"), bool)]
    findings = []
    for skew, name in measured:
        said = f"peer {name}'s clock is {abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} this hub's"
        if abs(skew) > MAX_SKEW_S:
            findings.append(Finding("error", f"{said}: signed messages beyond {MAX_SKEW_S:g} s are refused",
                                    f"fix NTP on this hub or {name} (`timedatectl`, `chronyc tracking`)"))
        elif abs(skew) > SKEW_WARN_S:
            findings.append(Finding("warn", f"{said} (refused beyond {MAX_SKEW_S:g} s)",
                                    f"fix NTP on this hub or {name} (`timedatectl`, `chronyc tracking`)"))
    if measured and not findings:
        skew, name = max(measured, key=lambda m: abs(m[0]))
        findings.append(Finding("ok", f"clock skew: at most {abs(skew):.1f} s ({name}) across {len(measured)} "
                                "peer(s)"))
    return findings


def check_site_sync(central: str, state: SyncState, head_seq: int, oldest_unacked_us: int,
                    now: float) -> Finding:
    """A site's link to its central billing node, from its outbox state and its ledger's head.

    ``oldest_unacked_us``: the ``ts_us`` of the first ledger row after ``state.acked_seq`` (0 when
    none).  A sync error from the last SYNC_STALE_S is an error; an older one (the hub stopped
    retrying) or unacknowledged rows older than SYNC_STALE_S a warning.
    """
    central = central or state.central
    lag = max(0, head_seq - state.acked_seq)
    age = now - oldest_unacked_us / 1e6 if lag and oldest_unacked_us else 0.0
    where = f"central {central}"
    look = "look at `democratic-ai sync status` and the hub's journal; is the central node up and reachable?"
    if state.last_error:
        if now - state.error_at <= SYNC_STALE_S:
            return Finding("error", f"{where}: sync failing, {lag} event(s) not acknowledged: {state.last_error}",
                           look)
        return Finding("warn", f"{where}: the last sync failed {_ago(now - state.error_at)} and was not retried "
                       f"since: {state.last_error}", "start the hub (it retries at start); " + look)
    if lag and age > SYNC_STALE_S:
        return Finding("warn", f"{where}: acked seq {state.acked_seq}, {lag} event(s) not acknowledged, the "
                       f"oldest from {_ago(age)}", look)
    if lag:
        return Finding("ok", f"{where}: acked seq {state.acked_seq}, lag {lag} event(s) ({age:.0f} s)")
    return Finding("ok", f"{where}: acked seq {state.acked_seq}, lag 0")


def check_central_sites(sites: list[SiteStatus], now: float) -> list[Finding]:
    """The central billing node: how many sites ``central.db`` holds; a warning for each whose last batch failed."""
    findings = [Finding("ok", f"central billing: {len(sites)} site(s) in central.db"
                        + ("" if sites else " (none has synced yet)"))]
    for site in sites:
        if not site.last_error:
            continue
        when = f" {_ago(now - site.error_at)}" if site.error_at else ""
        findings.append(Finding("warn", f"site {site.name or '?'} ({site.node_id}): its last batch failed{when} "
                                f"(held up to seq {site.acked_seq}): {site.last_error}",
                                "on that site, run `democratic-ai sync status` and `democratic-ai ledger verify`"))
    return findings


def _peer_name(peer: dict[str, Any]) -> str:
    site, node_id = peer.get("site"), str(peer.get("node_id", "?"))
    return str(site) if site else node_id[:16]


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _day(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d")


def _mode(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"

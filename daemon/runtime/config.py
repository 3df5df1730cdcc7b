"""Hub configuration: documented frozen dataclasses, one loader that rejects unknown keys.

Every key has a default, so ``democratic-ai serve`` with no file starts a working hub.
A bad file fails at start with a ``ConfigError`` naming the key (``http.listen``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from daemon.core.errors import ConfigError
from daemon.runtime.listen import check_exposure
from daemon.runtime.listen import parse_listen as parse_listen  # re-exported: the doors read it here

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|min|h|hour)\s*$")
_RATE_SECONDS = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str) -> tuple[int, float]:
    """``"1000/min"`` -> ``(1000, 60.0)``: a count per window of seconds."""
    match = _RATE.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a rate like '100/s', '1000/min' or '5000/h'")
    return int(match.group(1)), _RATE_SECONDS[match.group(2)]


def default_state_dir() -> str:
    """``$STATE_DIRECTORY`` under systemd (its first entry: it may list several), else ./var."""
    env = os.environ.get("STATE_DIRECTORY")
    return env.split(":")[0] if env else "./var"


def state_dir_of(args: Any) -> Path:
    """The state dir a command works on: ``--state-dir`` when given, else the default."""
    return Path(getattr(args, "state_dir", None) or default_state_dir())


@dataclass(frozen=True)
class StateConfig:
    """``[state]``; unset ``dir`` means $STATE_DIRECTORY under systemd, else ./var."""

    #: where SQLite files, the JWT secret, the TLS cert and the bootstrap key live
    dir: str = "./var"


@dataclass(frozen=True)
class HttpConfig:
    """``[http]``: the HTTP/1.1 + WebSocket door; its ``max_body_bytes`` also bounds HTTP/3 and gRPC."""

    listen: str = "127.0.0.1:8080"
    #: request bodies over this are PAYLOAD_TOO_LARGE
    max_body_bytes: int = 8 * 1024 * 1024
    #: browser origins allowed to call /mcp (an Origin not listed is refused, 403)
    allowed_origins: list[str] = field(default_factory=list)
    #: this hub's URL as its clients reach it ("https://hub.example:8080"): names /mcp in its OAuth
    #: metadata and 401 challenges; empty: the request's Host, but only a loopback one or one listed below
    public_url: str = ""
    #: Host header values ("hub.lan", "hub.lan:8080") trusted to name this hub when public_url is empty
    allowed_hosts: list[str] = field(default_factory=list)
    #: a /v1/ws socket without credentials at the upgrade must send {"type": "auth", ...} within this
    ws_auth_timeout_s: float = 5.0
    #: calls one /v1/ws socket may have in flight; past it a call frame is answered RATE_LIMITED
    ws_max_in_flight: int = 32
    #: "auto": TLS when listen is beyond loopback or a certificate is set; "on": always; "off": plain text
    tls: str = "auto"
    #: PEM files; empty: the hub's self-signed pair in the state dir (the one HTTP/3 uses)
    certificate: str = ""
    private_key: str = ""
    #: plain text beyond loopback (passwords, keys and tokens in clear on the network) only when true
    allow_plaintext: bool = False
    #: when set, GET /metrics needs ``Authorization: Bearer <metrics_token>`` (401 without)
    metrics_token: str = ""
    #: the console's cookie says Secure even on plain http (TLS ends at a proxy in front of the hub)
    console_secure_cookie: bool = False
    #: plain requests served by the httptools fast path, anything unusual handed to aiohttp;
    #: false: aiohttp serves every request itself
    fast_path: bool = True


@dataclass(frozen=True)
class Http3Config:
    """``[http3]``: the QUIC door and its per-client limits."""

    enabled: bool = True
    listen: str = "127.0.0.1:8443"
    #: PEM files; empty: a self-signed pair is made in the state dir
    certificate: str = ""
    private_key: str = ""
    max_streams_per_connection: int = 128
    max_connections: int = 256
    #: address validation: a new client first proves its address with a Retry round trip, so a spoofed
    #: source cannot make the hub hold connection state or amplify its answers at a victim
    retry: bool = True
    #: request body bytes one connection may have the hub hold at once (all its streams together);
    #: a stream that would pass it is answered 503 UNAVAILABLE; at least http.max_body_bytes
    max_buffered_bytes: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class GrpcConfig:
    """``[grpc]``: the gRPC door (HTTP/2; TLS beyond loopback, as ``[http]``)."""

    enabled: bool = True
    listen: str = "127.0.0.1:50051"
    #: "auto", "on" or "off", as http.tls
    tls: str = "auto"
    #: PEM files; empty: the hub's self-signed pair in the state dir
    certificate: str = ""
    private_key: str = ""
    #: plain text beyond loopback only when true, as http.allow_plaintext
    allow_plaintext: bool = False


@dataclass(frozen=True)
class McpConfig:
    """``[mcp]``: the handshake era's sessions (``Mcp-Session-Id``) on /mcp."""

    #: sessions open at once, all tenants together; past it (none idle) initialize is 503 UNAVAILABLE
    max_sessions: int = 1024
    #: sessions one tenant may hold; its least recently used one ends to make room (never another tenant's)
    max_sessions_per_tenant: int = 64
    #: a session unused this long is ended
    session_idle_s: float = 3600.0


@dataclass(frozen=True)
class NodeConfig:
    """``[node]``: this hub as its fleet knows it."""

    #: the site name peers see and ``[federation] allow`` matches; "" means the host name
    name: str = ""


@dataclass(frozen=True)
class FleetConfig:
    """``[fleet]``: whom this hub trusts.  With no certificate and no trusted keys it federates with nobody."""

    #: the node certificate ``fleet join`` installed; "" means <state dir>/fleet/node.cert
    cert: str = ""
    #: node public keys (base64) accepted without a certificate (labs, tests)
    trusted_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class P2pConfig:
    """``[p2p]``: the libp2p node that carries adverts and forwarded calls between fleet peers."""

    #: false keeps the hub alone even when it holds a certificate
    enabled: bool = True
    listen: str = "/ip4/127.0.0.1/tcp/4701"
    #: peers to dial at start and keep dialling: multiaddrs ending in /p2p/<node id>
    bootstrap: list[str] = field(default_factory=list)
    #: how often capabilities are re-announced; an advert expires after 3 intervals
    advert_interval_s: float = 10.0


@dataclass(frozen=True)
class MdnsConfig:
    """``[mdns]``: finding fleet peers on the LAN with no configuration (a hint: the certificate decides)."""

    enabled: bool = True
    #: the IP addresses to announce and browse on; [] means the host of ``[p2p] listen``
    interfaces: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FederationConfig:
    """``[federation]``: what this hub forwards to its peers and what it serves for them."""

    #: false: never forward a call to a peer (this hub still serves its peers)
    forward: bool = True
    #: a call travels at most this many hops
    max_hops: int = 3
    #: origin site name (or "*") -> the actions (or "*") it may call here
    allow: dict[str, list[str]] = field(default_factory=lambda: {"*": ["*"]})
    #: calls one origin node may have running here at once; past it the answer is UNAVAILABLE
    max_in_flight_per_peer: int = 64
    #: a forwarded call with no deadline of its own gives up on a silent peer after this
    call_timeout_s: float = 30.0


@dataclass(frozen=True)
class BillingConfig:
    """``[billing]``: this hub's part in fleet billing; a site syncs its ledger to the central node."""

    #: "site" (pushes its usage) or "central" (receives every site's and bills across them)
    role: str = "site"
    #: the node id of the central billing node; "" means this site syncs to nobody
    central: str = ""
    #: how often a site pushes what the centre has not acknowledged
    sync_interval_s: float = 5.0
    #: ledger rows in one batch
    batch_max: int = 1000
    #: the central node's HTTP door (https://host:port), for a centre outside the fleet's libp2p network
    central_url: str = ""
    #: a CA file (PEM) to trust for ``central_url`` besides the system's: the centre's own self-signed certificate
    central_ca: str = ""
    #: a late event for a closed month still counts in it this many days after the month's end
    grace_days: float = 5.0


@dataclass(frozen=True)
class ModulesConfig:
    """``[modules]``: which modules start, their options and threads; the part SIGHUP reloads."""

    enabled: list[str] = field(default_factory=lambda: ["echo", "text.summarize"])
    #: per-module options, ``[modules.options."audio.vad"] threshold = 0.5``
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: inference threads; 0 = one per core
    threads: int = 0
    #: onnxruntime execution providers in order of preference; empty = CUDA if present, else CPU
    providers: list[str] = field(default_factory=list)
    #: calls a remote (attached) module may run at once
    remote_concurrency: int = 16
    #: calls that may wait for one module's slots; past it a call gets 503 UNAVAILABLE with Retry-After
    queue_depth: int = 256
    #: the TTL of a call that carries none, in seconds: nothing waits or runs forever
    default_ttl_s: float = 60.0


@dataclass(frozen=True)
class AuthConfig:
    """``[auth]``: JWT lifetimes in seconds (access 15 min, refresh 30 days by default) and
    what a caller not yet authenticated may cost (per client IP; IPv6 per /64)."""

    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    #: credential checks that miss the cache (each may read SQLite), refreshes and revocations
    #: per client IP; past it 429 RATE_LIMITED with Retry-After, before any database work
    ip_rate_limit: str = "100/s"
    #: logins per client IP (each costs an argon2id hash); past it 429 before any hashing
    login_rate_limit: str = "30/min"
    #: threads that hash login passwords, apart from the pools modules and the ledger use
    login_threads: int = 1
    #: logins that may wait for those threads; past it 503 UNAVAILABLE with Retry-After
    login_queue: int = 16


@dataclass(frozen=True)
class LedgerConfig:
    """``[ledger]``: the usage ledger writer's group commit."""

    #: group commit: a batch is written when it has this many events ...
    batch_max: int = 512
    #: ... or when its first event has waited this long
    batch_delay_ms: float = 2.0
    #: events sent to the writer process and not yet answered; past it a call gets 503 with Retry-After
    max_pending: int = 4096
    #: a writer process that dies is started again; not back within this many seconds, the hub exits
    #: non-zero (systemd's Restart=on-failure then restarts the whole hub)
    restart_within_s: float = 30.0


@dataclass(frozen=True)
class PlanConfig:
    """``[plans.<name>]``: prices as decimal strings in ``currency``, included units, overage and rate limits."""

    currency: str = "JPY"
    base_monthly: str = "4900"
    base_yearly: str = "49000"
    included: dict[str, float] = field(
        default_factory=lambda: {"api_calls": 100000, "compute_hours": 100, "storage_gb": 50}
    )
    overage: dict[str, str] = field(
        default_factory=lambda: {"api_calls": "0.05", "compute_hours": "50", "storage_gb": "10"}
    )
    rate_limits: dict[str, str] = field(default_factory=lambda: {"api_calls": "1000/min"})
    #: price of one call, debited from prepaid credits
    call_price: str = "0.05"

    def validate(self, name: str) -> None:
        """ConfigError naming ``plans.<name>.<key>`` for a negative or non-decimal price or a bad rate."""
        for key in ("base_monthly", "base_yearly", "call_price", *(f"overage.{m}" for m in self.overage)):
            raw = getattr(self, key) if "." not in key else self.overage[key.split(".", 1)[1]]
            try:
                if Decimal(str(raw)) < 0:
                    raise InvalidOperation
            except InvalidOperation:
                raise ConfigError(f"plans.{name}.{key}: {raw!r} is not a non-negative decimal") from None
        for metric, rate in self.rate_limits.items():
            try:
                parse_rate(rate)
            except ValueError as exc:
                raise ConfigError(f"plans.{name}.rate_limits.{metric}: {exc}") from None


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: level DEBUG, INFO, WARNING or ERROR, and the line format."""

    level: str = "INFO"
    #: one JSON object per line (journald friendly); false for plain text
    json: bool = True


@dataclass(frozen=True)
class ShutdownConfig:
    """``[shutdown]``: the drain after SIGTERM."""

    #: seconds in-flight calls get to finish after SIGTERM
    grace_s: float = 10.0


@dataclass(frozen=True)
class HubConfig:
    """The whole configuration file, one field per TOML table; every key has a default."""

    state: StateConfig = field(default_factory=StateConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    http3: Http3Config = field(default_factory=Http3Config)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    mcp: McpConfig = field(default_factory=McpConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    p2p: P2pConfig = field(default_factory=P2pConfig)
    mdns: MdnsConfig = field(default_factory=MdnsConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    billing: BillingConfig = field(default_factory=BillingConfig)
    modules: ModulesConfig = field(default_factory=ModulesConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    plans: dict[str, PlanConfig] = field(default_factory=lambda: {"starter": PlanConfig()})
    log: LogConfig = field(default_factory=LogConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)

    @property
    def state_dir(self) -> Path:
        """``state.dir`` as a Path (relative paths are to the working directory)."""
        return Path(self.state.dir)

    @classmethod
    def from_toml(cls, path: str | Path | None) -> HubConfig:
        """Load a TOML file (None: embedded defaults); $STATE_DIRECTORY wins when unset."""
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = tomllib.loads(Path(path).read_text())
            except FileNotFoundError:
                raise ConfigError(f"config file {path} does not exist") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HubConfig:
        """Build and ``check`` a config from parsed TOML; ConfigError names the first unknown or bad key."""
        config = _build(cls, data, "")
        if "dir" not in data.get("state", {}):
            config = dataclasses.replace(config, state=StateConfig(dir=default_state_dir()))
        config.check()
        return config

    def check(self) -> None:
        """Cross-field checks the types cannot express (listen addresses, limits, level, plans); ConfigError."""
        for key, listen in (("http.listen", self.http.listen), ("http3.listen", self.http3.listen),
                            ("grpc.listen", self.grpc.listen)):
            try:
                parse_listen(listen)
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from None
        if self.http.max_body_bytes <= 0:
            raise ConfigError("http.max_body_bytes: must be positive")
        if self.http.public_url and not re.match(r"^https?://[^/?#\s]+$", self.http.public_url.rstrip("/")):
            raise ConfigError("http.public_url: must be http(s)://host[:port] with no path")
        for key, value in (("http.ws_auth_timeout_s", self.http.ws_auth_timeout_s),
                           ("http.ws_max_in_flight", self.http.ws_max_in_flight),
                           ("mcp.max_sessions", self.mcp.max_sessions),
                           ("mcp.max_sessions_per_tenant", self.mcp.max_sessions_per_tenant),
                           ("mcp.session_idle_s", self.mcp.session_idle_s)):
            if value <= 0:
                raise ConfigError(f"{key}: must be positive")
        check_exposure("http", self.http)
        if self.grpc.enabled:
            check_exposure("grpc", self.grpc)
        if self.http3.max_buffered_bytes < self.http.max_body_bytes:
            raise ConfigError("http3.max_buffered_bytes: must be at least http.max_body_bytes, "
                              "or the largest allowed body could never be received")
        if self.modules.threads < 0:
            raise ConfigError("modules.threads: must be >= 0")
        if self.ledger.max_pending <= 0:
            raise ConfigError("ledger.max_pending: must be positive")
        if not self.ledger.restart_within_s > 0:
            raise ConfigError("ledger.restart_within_s: must be positive")
        if self.log.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log.level: {self.log.level!r} is not DEBUG, INFO, WARNING or ERROR")
        for key, rate in (("auth.ip_rate_limit", self.auth.ip_rate_limit),
                          ("auth.login_rate_limit", self.auth.login_rate_limit)):
            try:
                parse_rate(rate)
            except ValueError as exc:
                raise ConfigError(f"{key}: {exc}") from None
        if self.auth.login_threads < 1 or self.auth.login_queue < 0:
            raise ConfigError("auth.login_threads: must be >= 1 (and auth.login_queue >= 0)")
        if not self.p2p.listen.startswith("/"):
            raise ConfigError(f"p2p.listen: {self.p2p.listen!r} is not a multiaddr like /ip4/0.0.0.0/tcp/4701")
        for i, addr in enumerate(self.p2p.bootstrap):
            if not addr.startswith("/") or "/p2p/" not in addr:
                raise ConfigError(f"p2p.bootstrap[{i}]: {addr!r} must be a multiaddr ending in /p2p/<node id>")
        if not 0.05 <= self.p2p.advert_interval_s <= 3600:
            raise ConfigError("p2p.advert_interval_s: must be between 0.05 and 3600 seconds")
        if not 1 <= self.federation.max_hops <= 16:
            raise ConfigError("federation.max_hops: must be 1..16")
        if self.federation.max_in_flight_per_peer <= 0 or not self.federation.call_timeout_s > 0:
            raise ConfigError("federation.max_in_flight_per_peer and call_timeout_s: must be positive")
        if len(self.node.name) > 64 or any(c in self.node.name for c in "/\n"):
            raise ConfigError("node.name: at most 64 characters, no '/' or newline")
        if self.billing.role not in ("site", "central"):
            raise ConfigError(f"billing.role: {self.billing.role!r} is not 'site' or 'central'")
        if not 0.05 <= self.billing.sync_interval_s <= 3600 or not 1 <= self.billing.batch_max <= 5000:
            raise ConfigError("billing.sync_interval_s (0.05..3600) or billing.batch_max (1..5000) is out of range")
        if self.billing.central_url and not re.match(r"^https?://[^/?#\s]+$", self.billing.central_url.rstrip("/")):
            raise ConfigError("billing.central_url: must be http(s)://host[:port] with no path")
        if re.match(r"^http://(?!(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/?$)", self.billing.central_url):
            # the centre's answer is what makes a site stop sending rows: nobody on the path may forge it
            raise ConfigError("billing.central_url: plain http only to this machine (loopback); use https")
        if not 0 <= self.billing.grace_days <= 366:
            raise ConfigError("billing.grace_days: must be 0..366")
        if not self.plans:
            raise ConfigError("plans: at least one plan is needed")
        for name, plan in self.plans.items():
            plan.validate(name)

    def with_overrides(self, **sections: Any) -> HubConfig:
        """A copy with whole sections replaced (the CLI's --state-dir); not re-checked."""
        return dataclasses.replace(self, **sections)


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data``, naming the key of the first bad value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key")
    kwargs = {key: _coerce(hints[key], value, f"{prefix}{key}") for key, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")  # type: ignore[arg-type]
    if origin is dict:
        _, value_hint = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table")
        return {k: _coerce(value_hint, v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list")
        return [_coerce(item_hint, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint in (int, float) and (isinstance(value, bool) or not isinstance(value, hint)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value

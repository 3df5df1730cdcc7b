"""Assembly and lifecycle of one hub: the order things start in and stop in.

Start: state dir -> tenancy (+ bootstrap key) -> ledger -> auth -> modules ->
pipeline -> doors -> READY.  Stop (SIGTERM): stop accepting -> drain in-flight
calls within the grace period -> close doors -> stop modules -> close ledger and
tenancy (reverse order, by the exit stack).  SIGHUP reloads the modules config.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import Counter

from daemon.api.http_api import HttpApi
from daemon.console.routes import Console, start_console
from daemon.core.errors import ConfigError, Unavailable
from daemon.core.i18n import t
from daemon.core.pipeline import Pipeline
from daemon.hosting.module_host import ModuleHost
from daemon.metering.plans import save_plans
from daemon.runtime import systemd
from daemon.runtime.config import GrpcConfig, HttpConfig, HubConfig
from daemon.runtime.files import atomic_write
from daemon.runtime.listen import parse_listen, serves_tls
from daemon.runtime.metrics import HubMetrics
from daemon.runtime.tls import TlsPair, client_context, ensure_pair

if TYPE_CHECKING:
    from daemon.doors.http import HttpDoor
    from daemon.metering.ledger.process import LedgerProcess
    from daemon.runtime.assembly import Parts
    from federation.fleet import FleetTrust
    from federation.identity import NodeIdentity
    from federation.service import Federation
    from federation.sync.outbox import SyncOutbox
    from federation.sync.receiver import SyncReceiver

log = logging.getLogger("democratic_ai.hub")


class HubStopped(Unavailable):
    """The hub ran, then stopped on a failure it cannot serve through (the ledger lost): exit non-zero."""

ENDPOINTS_FILE = "endpoints.json"
#: how often READY, held back while the ledger writer restarts, looks again
LEDGER_POLL_S = 0.05


class Door(Protocol):
    """A listener: HTTP/1.1+WS, HTTP/3, gRPC."""

    port: int

    async def start(self) -> None:
        """Bind and serve; ``port`` is then the bound one (config may ask for 0)."""
        ...

    async def stop_accepting(self) -> None:
        """Take no new connections or calls; those already open keep being served until ``close``."""
        ...

    async def close(self) -> None:
        """End what is still open and release the socket; the hub calls it in reverse start order."""
        ...


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where each door really listens, as URLs; None for a door that is off."""

    http: str
    http3: str | None
    grpc: str | None
    #: the hub's self-signed certificate, for clients to trust, when a door serves it; else None
    ca_file: str | None = None
    #: the libp2p multiaddrs fleet peers dial (with /p2p/<node id>); empty when the hub federates with nobody
    p2p: tuple[str, ...] = ()
    node_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The endpoints.json body the CLI and tests read, with this process's pid."""
        return {"http": self.http, "http3": self.http3, "grpc": self.grpc, "ca_file": self.ca_file,
                "p2p": list(self.p2p), "node_id": self.node_id, "pid": os.getpid()}


def prepare_state_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it owner-only (0700) where the filesystem allows; returns it."""
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        path.chmod(0o700)
    return path


class Hub:
    """One hub process: ``run`` starts it in order, serves until SIGTERM/SIGINT, then stops it in reverse."""

    def __init__(self, config: HubConfig, *, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics = HubMetrics()
        self.shutdown = asyncio.Event()
        self.doors: list[Door] = []
        self.host: ModuleHost | None = None
        self.pipeline: Pipeline | None = None
        self.state = "starting"
        self._reload_task: asyncio.Task[None] | None = None
        self.ledger_healthy: Callable[[], bool] = lambda: False
        #: why the hub must stop and exit non-zero (the ledger writer could not be restarted)
        self.fatal: str | None = None
        self.http_door: HttpDoor
        self.http3_door: Door | None = None
        self.grpc_door: Door | None = None
        self.federation: Federation | None = None

    def readiness(self) -> dict[str, Any]:
        """The /ready report: ready once open, every enabled module tried and the ledger healthy."""
        host = self.host
        ledger_ok = self.ledger_healthy()
        return {
            "ready": self.state == "open" and host is not None and host.loaded and ledger_ok,
            "state": self.state,
            "ledger": "ok" if ledger_ok else "unavailable",
            # anonymous callers read this: the hub's own modules by name, attached ones (a tenant's names) counted
            "modules": sorted(h.module_id for h in host.handles() if h.kind == "local") if host else [],
            "remote_modules": sum(1 for h in host.handles() if h.kind != "local") if host else 0,
            "failed_modules": [{"module": f.name, "error": f.error} for f in host.failed.values()] if host else [],
        }

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (SIGHUP reloads modules), drain and stop; returns once stopped."""
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.shutdown.set), (signal.SIGINT, self.shutdown.set),
                             (signal.SIGHUP, self._request_reload)):
            loop.add_signal_handler(sig, handler)
        try:
            async with contextlib.AsyncExitStack() as stack:
                # first in, last out: the loop keeps pinging systemd's watchdog through start and drain
                await stack.enter_async_context(systemd.Watchdog.from_environment())
                await self._start(stack)
                await self._serve_until_shutdown()
                self.state = "draining"
                in_flight = self.pipeline.in_flight if self.pipeline is not None else 0
                systemd.notify("STOPPING=1", systemd.status(f"draining: {in_flight} calls in flight"))
                await self._stop()
                systemd.notify(systemd.status("stopping modules, closing the ledger and tenancy"))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        log.info("hub stopped")
        if self.fatal is not None:
            # a non-zero exit: systemd's Restart=on-failure starts the hub again, whole
            raise HubStopped(t("errors.hub.hub_stopped_service_manager", fatal=self.fatal))

    def _ledger_lost(self, reason: str) -> None:
        """The ledger writer died and no new one came up in time: drain, stop, exit non-zero."""
        self.fatal = f"the usage ledger is lost: {reason}"
        self.shutdown.set()

    def _request_reload(self) -> None:
        # reloads run one at a time, in order; the task is held until it ends
        previous = self._reload_task

        async def run_after_previous() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await self.reload()

        self._reload_task = asyncio.get_running_loop().create_task(run_after_previous())

    async def _serve_until_shutdown(self) -> None:
        await self.shutdown.wait()
        if self._reload_task is not None:
            await asyncio.gather(self._reload_task, return_exceptions=True)

    async def reload(self) -> None:
        """SIGHUP: re-read the config file and apply the [modules] section."""
        systemd.notify(*systemd.reloading(), systemd.status("reloading modules"))
        try:
            fresh = HubConfig.from_toml(self.config_path) if self.config_path else self.config
            assert self.host is not None
            await self.host.reload(fresh.modules)
        except ConfigError as exc:
            log.error("reload refused: bad config", extra={"error": str(exc)})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed reload must not leave the hub half-stopped or systemd waiting
            log.exception("reload failed: the hub keeps serving", extra={"error": f"{type(exc).__name__}: {exc}"})
        else:
            log.info("modules reloaded", extra={"modules": sorted(h.module_id for h in self.host.handles())})
        finally:
            # READY=1 after RELOADING=1 whatever happened: without it systemd shows the unit reloading forever
            systemd.notify("READY=1", self._serving_status())

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        from daemon.runtime.assembly import announce_bootstrap_key, open_parts

        config = self.config
        state_dir = prepare_state_dir(config.state_dir)
        systemd.notify(systemd.status("opening tenancy and the usage ledger"))
        parts = await open_parts(config, state_dir, self.metrics, stack, on_ledger_lost=self._ledger_lost)
        # admin commands (invoice, usage) without --config bill with the plans this hub serves with
        save_plans(state_dir, config.plans)
        self.ledger_healthy = lambda: parts.ledger.healthy
        if parts.bootstrap_key:
            announce_bootstrap_key(parts.bootstrap_key, state_dir)  # on a terminal only, never to a log
        self.host = ModuleHost(config.modules, state_dir)
        systemd.notify(systemd.status(f"loading modules: {', '.join(config.modules.enabled) or 'none'}"))
        await self.host.start()
        stack.push_async_callback(self.host.stop)
        self.pipeline = Pipeline(authenticator=parts.authenticator, usage=parts.usage, host=self.host,
                                 metrics=self.metrics, default_ttl_s=config.modules.default_ttl_s)
        api = HttpApi(self.pipeline, self.metrics, readiness=self.readiness, usage=parts.reports,
                      metrics_token=config.http.metrics_token)
        parts.mount_admin(api)
        await self._join_fleet(parts, state_dir, api, stack)
        console = start_console(stack, api, parts.store, parts.ledger, parts.authenticator, config,
                                readiness=self.readiness, endpoints=lambda: self._endpoints().to_dict(),
                                peers=lambda: self.federation.views() if self.federation is not None else None,
                                connections=lambda: len(self.http_door.events.sockets))
        self.doors = self._build_doors(api, console)
        systemd.notify(systemd.status("starting doors"))
        for door in self.doors:
            await door.start()
            stack.push_async_callback(door.close)  # closed in reverse, even if a later door fails
        self._write_endpoints(state_dir)
        # what start-up built lives as long as the hub: keep the collector from re-scanning it
        gc.freeze()
        self.state = "open"
        if await self._ledger_up(parts.ledger):
            # every door listens (start returned bound) and the ledger writer is up: systemd may count on us
            systemd.notify("READY=1", self._serving_status())
        log.info("hub ready", extra={"state_dir": str(state_dir), **self._endpoints().to_dict()})

    async def _join_fleet(self, parts: Parts, state_dir: Path, api: HttpApi,
                          stack: contextlib.AsyncExitStack) -> None:
        """Federation, when this hub holds a fleet certificate (or trusted keys) and ``[p2p]`` is on.

        Started after the pipeline (peers' calls run through it) and before the doors; closed
        before the modules stop, so a peer's call in flight ends while its module is still there.
        """
        from daemon.metering.served import ServedForPeers
        from federation.fleet import load_trust
        from federation.identity import IdentityError, NodeIdentity

        config = self.config
        identity = NodeIdentity.load_or_create(state_dir)
        assert self.pipeline is not None
        self.pipeline.node_id = identity.peer_id
        try:
            trust = load_trust(state_dir, config.fleet.cert, config.fleet.trusted_keys, identity=identity)
        except IdentityError as exc:  # a damaged certificate or a bad trusted key: fix the file, not a crash
            raise ConfigError(f"fleet: {exc}") from None
        if not (config.p2p.enabled and trust.federates):
            log.info("no fleet certificate or trusted keys: this hub federates with nobody",
                     extra={"node_id": identity.peer_id})
            if config.billing.role == "central" or config.billing.central:
                # usage batches are signed by fleet members and checked against the fleet: no fleet, no sync
                log.warning("[billing] is set but this hub is in no fleet (no certificate, or [p2p] off): "
                            "usage sync is off until `democratic-ai fleet join`")
            return
        from federation.service import Federation  # imports libp2p: only a hub that federates pays for it

        systemd.notify(systemd.status("joining the fleet"))
        served = ServedForPeers(parts.ledger, max_in_flight_per_peer=config.federation.max_in_flight_per_peer)
        self.federation = Federation(config=config, identity=identity, trust=trust, pipeline=self.pipeline,
                                     served=served, registry=self.metrics.registry)
        if config.billing.role == "central":
            self.federation.receiver = self._central_receiver(trust, state_dir, stack)
            api.sync_batch = self.federation.receiver.receive
        elif config.billing.central:
            self.federation.outbox = self._outbox(identity, trust, state_dir, self.federation)
            parts.ledger.on_committed = self.federation.outbox.wake  # usage reaches the centre in moments
        await self.federation.start(state_dir)
        stack.push_async_callback(self.federation.close)
        self.pipeline.forwarder = self.federation.forwarder
        api.peers = self.federation.views

    def _central_receiver(self, trust: FleetTrust, state_dir: Path, stack: contextlib.AsyncExitStack) -> SyncReceiver:
        """The central node: every site's batches, checked, into ``central.db`` through one writer thread."""
        from daemon.metering.central import CENTRAL_FILE, CentralLedger
        from federation.sealing import ReplayGuard
        from federation.sync.receiver import SyncReceiver

        central = CentralLedger(state_dir / CENTRAL_FILE, grace_days=self.config.billing.grace_days,
                                registry=self.metrics.registry)
        writer = ThreadPoolExecutor(1, thread_name_prefix="central-ledger")
        stack.callback(central.close)
        stack.callback(writer.shutdown)
        # batches whose seal or sender did not hold; what the ledger refuses it counts itself (central_refused_batches)
        denied = Counter("democratic_ai_sync_refusals", "Usage batches refused before the central ledger, by reason",
                         ["reason"], registry=self.metrics.registry)

        async def ingest(site: str, name: str, rows: list[list[Any]]) -> int:
            return await asyncio.get_running_loop().run_in_executor(writer, central.ingest, site, name, rows)

        return SyncReceiver(trust=trust, guard=ReplayGuard(), ingest=ingest,
                            on_denied=lambda reason: denied.labels(reason).inc())

    def _outbox(self, identity: NodeIdentity, trust: FleetTrust, state_dir: Path,
                federation: Federation) -> SyncOutbox:
        """A site: its ledger pushed to the central node, over the fleet link or ``[billing] central_url``."""
        from daemon.metering.ledger.reader import ledger_head, rows_after
        from daemon.metering.ledger.writer import LEDGER_FILE
        from federation.sync.http import post_batch
        from federation.sync.outbox import SyncOutbox

        billing = self.config.billing
        ledger = state_dir / LEDGER_FILE
        send: Callable[[bytes], Awaitable[int]] = federation.send_batch
        if billing.central_url:
            url = billing.central_url
            context = client_context(Path(billing.central_ca)) if url.startswith("https:") else None

            async def send_https(data: bytes) -> int:
                return await post_batch(url, data, context)

            send = send_https
        return SyncOutbox(identity=identity, cert=trust.own, state_dir=state_dir,
                          read_rows=lambda after, limit: rows_after(ledger, after, limit),
                          head=lambda: ledger_head(ledger), send=send, interval_s=billing.sync_interval_s,
                          batch_max=billing.batch_max, central=billing.central)

    def _serving_status(self) -> str:
        handles = self.host.handles() if self.host is not None else []
        failed = len(self.host.failed) if self.host is not None else 0
        return systemd.status(f"serving: {len(handles)} modules" + (f", {failed} failed to load" if failed else ""))

    async def _ledger_up(self, ledger: LedgerProcess) -> bool:
        """Wait while the ledger writer is being restarted (it died while modules loaded); True once up.

        Bounded by ``[ledger] restart_within_s``: it comes back, or it is lost and ``shutdown`` is set.
        """
        if ledger.healthy:
            return True
        systemd.notify(systemd.status("waiting for the usage ledger writer"))
        while not ledger.healthy and not self.shutdown.is_set():
            # the ledger process offers no event for "up again"; this runs only in that rare case
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.shutdown.wait(), LEDGER_POLL_S)
        return ledger.healthy

    def _build_doors(self, api: HttpApi, console: Console) -> list[Door]:
        """HTTP/1.1 + WebSocket always, MCP on its routes, HTTP/3 and gRPC when enabled."""
        from daemon.api.mcp.endpoint import McpEndpoint
        from daemon.doors.grpc import GrpcDoor
        from daemon.doors.http import HttpDoor
        from daemon.doors.http3 import Http3Door

        assert self.pipeline is not None and self.host is not None
        config = self.config
        self.http_door = HttpDoor(config.http, api, self.pipeline, self.host,
                                  remote_concurrency=config.modules.remote_concurrency,
                                  tls=self._door_tls("http", config.http), console=console)
        mcp = McpEndpoint(api, config.http, max_sessions=config.mcp.max_sessions,
                          max_sessions_per_tenant=config.mcp.max_sessions_per_tenant,
                          session_idle_s=config.mcp.session_idle_s)
        doors: list[Door] = [self.http_door, mcp]
        if config.http3.enabled:
            self.http3_door = Http3Door(config.http3, api, config.state_dir,
                                        max_body_bytes=config.http.max_body_bytes, advertise=self._advertise_h3)
            doors.append(self.http3_door)
        if config.grpc.enabled:
            self.grpc_door = GrpcDoor(config.grpc, api, max_body_bytes=config.http.max_body_bytes,
                                      grace_s=config.shutdown.grace_s, tls=self._door_tls("grpc", config.grpc))
            doors.append(self.grpc_door)
        return doors

    def _door_tls(self, name: str, section: HttpConfig | GrpcConfig) -> TlsPair | None:
        """The pair a TCP door serves, or None for plain text (loopback, or ``allow_plaintext``)."""
        if not serves_tls(section):
            return None
        return ensure_pair(self.config.state_dir, section.certificate, section.private_key,
                           host=parse_listen(section.listen)[0], section=name)

    def _advertise_h3(self, port: int) -> None:
        self.http_door.alt_svc = f'h3=":{port}"; ma=86400'

    def _endpoints(self) -> Endpoints:
        def url(scheme: str, listen: str, door: Door | None) -> str | None:
            host = listen.rpartition(":")[0]
            # a wildcard names no address to dial: a local client reaches the door on loopback
            host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
            return f"{scheme}://{host}:{door.port}" if door else None

        def tls(door: Door | None) -> TlsPair | None:
            return getattr(door, "tls", None)  # the TCP doors and HTTP/3 hold the pair they serve

        config = self.config
        pairs = [tls(door) for door in (self.http_door, self.http3_door, self.grpc_door)]
        own = next((p.certificate for p in pairs if p is not None and p.self_signed), None)
        return Endpoints(http=url("https" if pairs[0] else "http", config.http.listen, self.http_door) or "",
                         http3=url("https", config.http3.listen, self.http3_door),
                         grpc=url("grpcs" if pairs[2] else "grpc", config.grpc.listen, self.grpc_door),
                         ca_file=str(own.resolve()) if own is not None else None,
                         p2p=tuple(self.federation.addrs) if self.federation is not None else (),
                         node_id=self.pipeline.node_id if self.pipeline is not None else "")

    def _write_endpoints(self, state_dir: Path) -> None:
        """Where each door really listens (port 0 in config picks a free one): for the CLI and tests."""
        atomic_write(state_dir / ENDPOINTS_FILE, json.dumps(self._endpoints().to_dict()).encode())

    async def _stop(self) -> None:
        for door in self.doors:
            await door.stop_accepting()
        assert self.pipeline is not None
        drained = await self.pipeline.drain(self.config.shutdown.grace_s)
        if not drained:
            log.warning("grace period over: cancelling calls still running",
                        extra={"in_flight": self.pipeline.in_flight})
        (self.config.state_dir / ENDPOINTS_FILE).unlink(missing_ok=True)

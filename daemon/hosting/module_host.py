"""Modules as the pipeline sees them: local (in-process) or remote (attached), one interface.

``ModuleHost`` owns the module set: it starts the enabled modules (a module that fails
to start is reported, the rest are served), keeps the router and one scheduler per
module in step, attaches and detaches remote modules, and reloads on SIGHUP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.core.errors import CapabilityNotFound, PermissionDenied
from daemon.core.i18n import t
from daemon.core.ports import FailedModule, ModuleHandle
from daemon.core.router import ModuleEntry, Router
from daemon.core.scheduler import ModuleScheduler
from daemon.hosting.remote_module import RemoteModule, Send, parse_registration
from daemon.runtime.config import ModulesConfig
from modules import registry
from modules.sdk import BoundCapability, Call, CapabilitySpec, Module, ModuleRuntime

log = logging.getLogger("democratic_ai.modules")


class LocalModule:
    """An in-process Module instance."""

    kind = "local"

    def __init__(self, module: Module) -> None:
        self.module = module
        self.module_id = module.name
        self.concurrency = module.concurrency
        self._bound: dict[str, BoundCapability] = {c.spec.action: c for c in module.capabilities()}
        self._info = {action: c.spec for action, c in self._bound.items()}

    @property
    def capabilities(self) -> dict[str, CapabilitySpec]:
        """Action -> spec, as the module's ``@capability`` methods declared them at construction."""
        return self._info

    def _get(self, action: str) -> BoundCapability:
        try:
            return self._bound[action]
        except KeyError:
            raise CapabilityNotFound(t("errors.module_host.module_no_capability", module_id=self.module_id,
                                       action=action)) from None

    def check_input(self, action: str, payload: Any) -> None:
        """VALIDATION_ERROR naming the JSON pointer of the first bad field; CAPABILITY_NOT_FOUND if no such action."""
        self._get(action).check_input(payload)

    # the pipeline has already run check_input
    async def invoke(self, action: str, payload: Any, call: Call) -> Any:
        """The validated result (a stream is drained); a module exception becomes MODULE_ERROR."""
        return await self._get(action).invoke(payload, call, checked=True)

    def stream(self, action: str, payload: Any, call: Call) -> AsyncIterator[Any]:
        """``Progress`` parts, then the validated result; a unary capability yields its result alone."""
        return self._get(action).stream(payload, call, checked=True)

    def describe(self) -> dict[str, Any]:
        """The module's own extra facts for /v1/capabilities (e.g. its execution provider)."""
        return self.module.describe()


@dataclass(slots=True)
class _Slot:
    handle: ModuleHandle
    scheduler: ModuleScheduler
    in_flight_tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class ModuleHost:
    """The module set, the router and the per-module schedulers, kept in step."""

    def __init__(self, config: ModulesConfig, state_dir: Path, *, onnx_providers: tuple[str, ...] = ()) -> None:
        self.config = config
        self.state_dir = state_dir
        threads = config.threads or os.cpu_count() or 1
        # CPU-bound capabilities and inference run here, never on the event loop
        self.executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="inference")
        self.threads = threads
        self.onnx_providers = onnx_providers or tuple(config.providers)
        self._slots: dict[str, _Slot] = {}
        self.failed: dict[str, FailedModule] = {}
        self.router = Router(load=self._load)
        self.loaded = False

    # -- lookup ---------------------------------------------------------------------
    def _load(self, module_id: str) -> int:
        return self._slots[module_id].scheduler.slots.load

    def handle(self, module_id: str) -> ModuleHandle:
        """The attached module with this id; KeyError when none (callers route first)."""
        return self._slots[module_id].handle

    def scheduler(self, module_id: str) -> ModuleScheduler:
        """The module's own slot queue (its concurrency limit); KeyError when it is not attached."""
        return self._slots[module_id].scheduler

    def handles(self) -> list[ModuleHandle]:
        """A snapshot of every attached module, local and remote, in attach order."""
        return [s.handle for s in self._slots.values()]

    def stats(self) -> dict[str, tuple[int, int]]:
        """module id -> (in flight, queued)."""
        return {mid: (s.scheduler.slots.in_flight, s.scheduler.slots.queued) for mid, s in self._slots.items()}

    # -- membership -----------------------------------------------------------------
    def add(self, handle: ModuleHandle) -> None:
        """Attach a module: its scheduler and router entry; ValueError when the id is taken."""
        if handle.module_id in self._slots:
            raise ValueError(f"module id {handle.module_id!r} is already in use")
        self._slots[handle.module_id] = _Slot(handle, ModuleScheduler(handle.concurrency, self.config.queue_depth))
        tenant_id = handle.tenant_id if isinstance(handle, RemoteModule) else None  # local modules serve everyone
        self.router.add(ModuleEntry(handle.module_id, frozenset(handle.capabilities), handle.concurrency, tenant_id))
        log.info("module up", extra={"module_id": handle.module_id, "kind": handle.kind,
                                     "actions": sorted(handle.capabilities)})

    def remove(self, module_id: str) -> ModuleHandle | None:
        """Detach a module (it is not stopped) and return it; None when it was not attached."""
        slot = self._slots.pop(module_id, None)
        self.router.remove(module_id)
        if slot is not None:
            log.info("module down", extra={"module_id": module_id})
        return slot.handle if slot else None

    # -- remote modules ---------------------------------------------------------------
    def attach(self, frame: Any, send: Send, *, owner: str, tenant_id: str | None,
               max_concurrency: int) -> RemoteModule:
        """Route calls to a module in another process from its register frame.

        ``tenant_id`` None makes it platform-wide (the caller checked for super_admin); else it
        serves that tenant's calls only, and may not claim an action a platform-wide module
        serves: it would take other tenants' callers' work from under the operator.
        VALIDATION_ERROR names a bad field of the frame; PERMISSION_DENIED when the id is taken
        or an action is a platform one.
        """
        reg = parse_registration(frame, max_concurrency)
        if reg.module_id in self.router:
            raise PermissionDenied(t("errors.module_host.module_id_already_attached", module_id=reg.module_id),
                                   {"module_id": reg.module_id})
        if tenant_id is not None:
            taken = sorted(a for a in reg.capabilities if self.router.platform_serves(a))
            if taken:
                raise PermissionDenied(
                    t("errors.module_host.action_served_hub_wide", action=taken[0]),
                    {"action": taken[0], "actions": taken},
                )
        module = RemoteModule(reg.module_id, reg.concurrency, reg.capabilities, send, owner=owner,
                              tenant_id=tenant_id, units=reg.units)
        self.add(module)
        return module

    def detach(self, module: RemoteModule) -> None:
        """Its socket closed: its routes vanish first, then its in-flight calls end (and may retry elsewhere)."""
        self.remove(module.module_id)
        module.disconnected()

    # -- local modules ----------------------------------------------------------------
    def _runtime(self, name: str) -> ModuleRuntime:
        return ModuleRuntime(
            executor=self.executor,
            state_dir=self.state_dir,
            options=dict(self.config.options.get(name, {})),
            logger=logging.getLogger(f"democratic_ai.module.{name}"),
            onnx_providers=self.onnx_providers,
            threads=self.threads,
        )

    async def start_module(self, name: str) -> None:
        """Find, instantiate and start ``name``, then attach it; a failure up to start goes to ``failed``, unraised."""
        try:
            module = registry.find(name)()
            await module.start(self._runtime(name))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one broken module must not take the hub down
            self.failed[name] = FailedModule(name, f"{type(exc).__name__}: {exc}")
            log.error("module failed to start", extra={"module_id": name, "error": str(exc)})
            return
        handle = LocalModule(module)
        if handle.module_id in self._slots:  # e.g. a remote module attached under this id first
            await module.stop()
            self.failed[name] = FailedModule(name, f"module id {handle.module_id!r} is already in use")
            log.error("module failed to start", extra={"module_id": name, "error": self.failed[name].error})
            return
        self.failed.pop(name, None)
        self.add(handle)

    async def start(self) -> None:
        """Start every enabled module in config order, then set ``loaded``; broken modules are skipped."""
        for name in self.config.enabled:
            await self.start_module(name)
        self.loaded = True

    async def stop_module(self, name: str) -> None:
        """Detach a module; a local one is also stopped, a remote one only detached."""
        handle = self.remove(name)
        if isinstance(handle, LocalModule):
            await handle.module.stop()

    async def reload(self, config: ModulesConfig) -> None:
        """SIGHUP: start modules newly enabled, stop the ones no longer enabled."""
        local = {h.module_id for h in self.handles() if h.kind == "local"}
        wanted = list(dict.fromkeys(config.enabled))
        self.config = config
        for name in sorted(local - set(wanted)):
            await self.stop_module(name)
        for name in wanted:
            if name not in local:
                await self.start_module(name)
        for name in list(self.failed):
            if name not in wanted:
                del self.failed[name]

    async def stop(self) -> None:
        """Stop the local modules and shut the inference pool without waiting, cancelling queued work."""
        for handle in self.handles():
            if isinstance(handle, LocalModule):
                await self.stop_module(handle.module_id)
        self.executor.shutdown(wait=False, cancel_futures=True)

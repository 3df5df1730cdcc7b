"""One remote module's stay on the hub: who attached it, whom it serves, and the watch on its credential.

The door that carries the module's socket (``doors/http.py``) only moves frames; the rules
live here:

- attaching needs ``module:create``; a super_admin's module (the ``*`` grant) serves every
  tenant, anyone else's serves its own tenant only (``ModuleHost.attach`` refuses a tenant
  module that claims a platform action);
- the attaching credential is re-checked every ``recheck_s``, as cached API keys are: once it
  no longer holds (key revoked, tenant suspended, token expired, role changed) the module is
  detached at once and the door is told to close the socket with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from daemon.core.envelope import Credentials, Principal
from daemon.core.errors import HubError, PermissionDenied, Unauthenticated
from daemon.core.i18n import t
from daemon.core.ports import Authenticator
from daemon.hosting.module_host import ModuleHost
from daemon.hosting.remote_module import RemoteModule, Send

log = logging.getLogger("democratic_ai.modules")

ATTACH_PERMISSION = "module:create"
PLATFORM_PERMISSION = "*"  # held by super_admin only: a module for every tenant


class Attachment:
    """A remote module from the moment its socket knocks until it is detached."""

    def __init__(self, host: ModuleHost, auth: Authenticator, credentials: Credentials, *, ip: str = "",
                 user_agent: str = "", recheck_s: float = 1.0, max_concurrency: int = 16) -> None:
        self.host, self.auth, self.credentials = host, auth, credentials
        self.ip, self.user_agent = ip, user_agent
        self.recheck_s, self.max_concurrency = recheck_s, max_concurrency
        self.principal: Principal | None = None
        self.module: RemoteModule | None = None

    async def admit(self) -> Principal:
        """Authenticate the knock and check ``module:create``; UNAUTHENTICATED / PERMISSION_DENIED otherwise."""
        principal = await self.auth.authenticate(self.credentials, ip=self.ip, user_agent=self.user_agent)
        self.auth.authorize(principal, ATTACH_PERMISSION)
        self.principal = principal
        return principal

    def register(self, frame: Any, send: Send) -> RemoteModule:
        """Attach the module its first frame describes, scoped to the admitted principal's tenant (or platform)."""
        if self.principal is None:
            raise RuntimeError("register() before admit()")
        tenant_id = None if self._is_platform(self.principal) else self.principal.tenant_id
        self.module = self.host.attach(frame, send, owner=self.principal.subject, tenant_id=tenant_id,
                                       max_concurrency=self.max_concurrency)
        return self.module

    async def watch(self, close: Callable[[HubError], Awaitable[None]]) -> None:
        """Re-check the credential every ``recheck_s`` until it fails: then detach, and ``close`` with the reason.

        A cached credential costs a dict lookup; the authenticator drops its cache within a
        second of a revocation or suspension (in this process at once), and the next tick here
        then reads the database and fails.
        """
        module = self.module
        if module is None:
            raise RuntimeError("watch() before register()")
        while True:
            await asyncio.sleep(self.recheck_s)
            try:
                self._still_holds(await self.auth.authenticate(self.credentials, ip=self.ip,
                                                               user_agent=self.user_agent), module)
            except (Unauthenticated, PermissionDenied) as exc:
                log.warning("remote module detached: its credential no longer holds",
                            extra={"module_id": module.module_id, "code": exc.code, "reason": exc.message})
                self.end()  # no call may reach it from here on
                await close(exc)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # a locked or busy tenancy store: keep the module, ask again next tick
                log.exception("re-checking a remote module's credential failed", extra={"module_id": module.module_id})

    def end(self) -> None:
        """Detach the module (its routes vanish, its calls end ModuleGone); a no-op when it is not attached."""
        module, self.module = self.module, None
        if module is not None:
            self.host.detach(module)

    def _still_holds(self, principal: Principal, module: RemoteModule) -> None:
        self.auth.authorize(principal, ATTACH_PERMISSION)
        if (module.tenant_id is None) != self._is_platform(principal) or (
                module.tenant_id is not None and principal.tenant_id != module.tenant_id):
            raise PermissionDenied(t("errors.attachment.attaching_credential_no_longer"))

    def _is_platform(self, principal: Principal) -> bool:
        try:
            self.auth.authorize(principal, PLATFORM_PERMISSION)
        except PermissionDenied:
            return False
        return True

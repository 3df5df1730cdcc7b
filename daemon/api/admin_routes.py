"""Mount the tenancy administration (daemon/api/admin.py) on the HTTP API's routes."""

from __future__ import annotations

import re
from typing import Any

from daemon.api.admin import AdminApi
from daemon.api.http_api import ApiRequest, ApiResponse, Handler, HttpApi
from daemon.core.envelope import Principal

# path -> {method: AdminApi method}; POSTs that create answer 201
ROUTES: dict[str, dict[str, str]] = {
    "/v1/tenants": {"GET": "list_tenants", "POST": "create_tenant"},
    "/v1/tenants/{tenant_id}": {"GET": "get_tenant", "PATCH": "update_tenant"},
    "/v1/users": {"GET": "list_users", "POST": "create_user"},
    "/v1/users/{user_id}": {"DELETE": "delete_user"},
    "/v1/api-keys": {"GET": "list_api_keys", "POST": "create_api_key"},
    "/v1/api-keys/{key_id}": {"DELETE": "revoke_api_key"},
    "/v1/auth/token": {"POST": "token"},
    "/v1/auth/refresh": {"POST": "refresh"},
    "/v1/auth/revoke": {"POST": "revoke"},
}
CREATES = frozenset({"create_tenant", "create_user", "create_api_key"})
# logging in and refreshing need no credentials; revoking a token works with or without
NO_CREDENTIALS = frozenset({"token", "refresh", "revoke"})


def mount_admin(api: HttpApi, admin: AdminApi) -> None:
    """Add every ``ROUTES`` path to ``api``; token routes authenticate only when credentials were sent."""
    for path, methods in ROUTES.items():
        api.add(path, **{verb: _handler(api, admin, name) for verb, name in methods.items()})


def _handler(api: HttpApi, admin: AdminApi, name: str) -> Handler:
    operation = getattr(admin, name)

    async def handle(request: ApiRequest, match: re.Match[str]) -> ApiResponse:
        ua = request.header("user-agent")
        principal: Principal | None = None
        if name not in NO_CREDENTIALS or request.credentials.present:
            principal = await api.pipeline.authenticate(request.credentials, ip=request.remote, user_agent=ua)
        body: Any = request.json() if request.method in ("POST", "PUT", "PATCH") else None
        result = await operation(principal, body, ip=request.remote, user_agent=ua, **match.groupdict())
        return ApiResponse.json(result, 201 if name in CREATES else 200)

    return handle

"""Before the hub knows who is calling, it must cost little: a real hub, a real aiohttp client.

What an anonymous caller may revoke, reuse of a rotated refresh token, the per-IP limiter in
front of authentication and login, failures audited per minute with a count, the bounded
argon2id pool, and a tenancy store locked by an operator command.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support import hubhttp
from tests.support.cli import cli_ok
from tests.support.hubproc import HubProcess, write_config

PASSWORD = "correct horse battery staple"


async def send(hub: HubProcess, method: str, path: str, *, key: str | None = None, token: str | None = None,
               json_body: object = None) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    return await hubhttp.send(hub.url, method, path, key=key, token=token, json_body=json_body)


def revoked_rows(state_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(state_dir / "tenancy.db")) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM revoked_tokens").fetchone()[0])


def audit_rows(state_dir: Path, action: str) -> list[tuple[str, str, int]]:
    with contextlib.closing(sqlite3.connect(state_dir / "tenancy.db")) as conn:
        return [(str(r[0]), str(r[1]), int(r[2])) for r in conn.execute(
            "SELECT ip, error, count FROM audit WHERE action = ? AND success = 0 ORDER BY id", (action,))]


def person(hub: HubProcess, email: str) -> None:
    cli_ok(hub.state_dir, "user", "create", "--tenant", "default", email, "--role", "user", "--password-stdin",
           stdin=PASSWORD + "\n")


async def login(hub: HubProcess, email: str) -> dict[str, Any]:
    status, tokens, _ = await send(hub, "POST", "/v1/auth/token",
                                   json_body={"email": email, "password": PASSWORD, "tenant": "default"})
    assert status == 200, tokens
    return tokens


# revocation


async def test_an_anonymous_caller_cannot_revoke_a_bare_string_or_fill_the_table(hub: HubProcess) -> None:
    before = revoked_rows(hub.state_dir)
    for junk in ("0123456789abcdef", "not-a-token", "a.b.c", "x" * 5000):
        status, body, _ = await send(hub, "POST", "/v1/auth/revoke", json_body={"token": junk})
        assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED", body
    status, body, _ = await send(hub, "POST", "/v1/auth/revoke", json_body={"jti": "0123456789abcdef"})
    assert status == 403 and body["error"]["code"] == "PERMISSION_DENIED"
    assert revoked_rows(hub.state_dir) == before


async def test_a_holder_still_revokes_its_own_token_without_credentials(hub: HubProcess) -> None:
    person(hub, "holder@example.com")
    tokens = await login(hub, "holder@example.com")
    status, body, _ = await send(hub, "POST", "/v1/auth/revoke", json_body={"token": tokens["access_token"]})
    assert status == 200 and body["revoked"]
    status, body, _ = await send(hub, "POST", "/v1/call", token=tokens["access_token"],
                                 json_body={"action": "echo", "payload": {}})
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"


async def test_reusing_a_rotated_refresh_token_revokes_the_rest_of_its_chain(hub: HubProcess) -> None:
    person(hub, "reuse@example.com")
    first = await login(hub, "reuse@example.com")
    status, second, _ = await send(hub, "POST", "/v1/auth/refresh", json_body={"refresh_token": first["refresh_token"]})
    assert status == 200
    status, _, _ = await send(hub, "POST", "/v1/call", token=second["access_token"], json_body={"action": "echo"})
    assert status == 200
    # someone replays the first refresh token: it fails, and what was issued from it dies with it
    status, body, _ = await send(hub, "POST", "/v1/auth/refresh", json_body={"refresh_token": first["refresh_token"]})
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
    status, body, _ = await send(hub, "POST", "/v1/auth/refresh", json_body={"refresh_token": second["refresh_token"]})
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"
    status, body, _ = await send(hub, "POST", "/v1/call", token=second["access_token"], json_body={"action": "echo"})
    assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED"


# a tenancy store locked by an operator command


async def test_a_locked_tenancy_store_answers_503_with_retry_after_then_serves(hub: HubProcess) -> None:
    status, _, _ = await send(hub, "GET", "/v1/tenants", key=hub.admin_key)  # the admin key is now cached
    assert status == 200
    holder = sqlite3.connect(hub.state_dir / "tenancy.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # what a CLI write holds while it runs
        status, body, headers = await send(hub, "POST", "/v1/tenants", key=hub.admin_key,
                                           json_body={"name": "while-locked"})
        assert status == 503, body
        assert body["error"]["code"] == "UNAVAILABLE" and int(headers["Retry-After"]) >= 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    status, body, _ = await send(hub, "POST", "/v1/tenants", key=hub.admin_key, json_body={"name": "while-locked"})
    assert status == 201, body


# the per-IP limiter and the failure tally


@pytest.fixture(scope="module")
def strict_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A hub whose per-IP limits are small enough to reach in a test."""
    state = tmp_path_factory.mktemp("strict")
    config = write_config(state / "hub.toml", '[auth]\nip_rate_limit = "5/min"\nlogin_rate_limit = "2/min"\n')
    process = HubProcess(state, config).start()
    yield process
    process.stop()


async def test_bad_credentials_from_one_address_are_cut_off_with_429_and_audited_as_counts(
        strict_hub: HubProcess) -> None:
    hub = strict_hub
    status, _, _ = await send(hub, "POST", "/v1/call", key=hub.admin_key, json_body={"action": "echo"})
    assert status == 200  # one check spent; the key is now cached
    answers = []
    for n in range(8):
        status, body, headers = await send(hub, "POST", "/v1/call", key=f"dai_{n:08x}_" + "x" * 43,
                                           json_body={"action": "echo"})
        answers.append((status, body["error"]["code"], headers.get("Retry-After")))
    assert answers[:4] == [(401, "UNAUTHENTICATED", None)] * 4
    assert {(status, code) for status, code, _ in answers[4:]} == {(429, "RATE_LIMITED")}
    assert all(int(retry or 0) >= 1 for _, _, retry in answers[4:])
    # a caller already known costs nothing and is not held back
    status, _, _ = await send(hub, "POST", "/v1/call", key=hub.admin_key, json_body={"action": "echo"})
    assert status == 200
    assert hub.stop() == 0  # the tallies of this minute are written at shutdown
    counted: dict[tuple[str, str], int] = {}  # a row per minute: two if the calls straddled a minute's end
    for ip, error, count in audit_rows(hub.state_dir, "auth.api_key"):
        counted[ip, error] = counted.get((ip, error), 0) + count
    assert counted[("127.0.0.1", "invalid API key")] == 4
    assert counted[("127.0.0.1", "too many attempts from this address")] == 4
    hub.start()


async def test_logins_from_one_address_are_limited_before_any_password_is_hashed(strict_hub: HubProcess) -> None:
    hub = strict_hub
    codes = []
    for _ in range(4):
        status, body, _ = await send(hub, "POST", "/v1/auth/token", json_body={
            "email": "nobody@example.com", "password": "guess", "tenant": "default"})
        codes.append((status, body["error"]["code"]))
    assert codes == [(401, "UNAUTHENTICATED")] * 2 + [(429, "RATE_LIMITED")] * 2


# argon2id on its own bounded pool


async def test_a_login_flood_is_bounded_and_calls_keep_being_served(tmp_path: Path) -> None:
    config = write_config(tmp_path / "hub.toml",
                          '[auth]\nlogin_rate_limit = "1000/s"\nlogin_threads = 1\nlogin_queue = 0\n')
    hub = HubProcess(tmp_path, config).start()
    try:
        person(hub, "flood@example.com")

        async def one_login() -> tuple[int, str, str | None]:
            status, body, headers = await send(hub, "POST", "/v1/auth/token", json_body={
                "email": "flood@example.com", "password": "wrong", "tenant": "default"})
            return status, body["error"]["code"], headers.get("Retry-After")

        logins = asyncio.gather(*(one_login() for _ in range(16)))
        calls = await asyncio.gather(*(send(hub, "POST", "/v1/call", key=hub.admin_key,
                                            json_body={"action": "echo", "payload": {"n": n}}) for n in range(8)))
        answers = await logins
        assert [status for status, _, _ in calls] == [200] * 8
        # one hash at a time and none waiting: the rest are refused at once, never queued
        assert {(status, code) for status, code, _ in answers} <= {(401, "UNAUTHENTICATED"), (503, "UNAVAILABLE")}
        busy = [retry for status, _, retry in answers if status == 503]
        assert busy and all(int(retry or 0) >= 1 for retry in busy)
        # the flood is over: a right password gets in
        assert (await login(hub, "flood@example.com"))["access_token"]
    finally:
        assert hub.stop() == 0

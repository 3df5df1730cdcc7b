"""An operator administers tenancy from the shell; bad input gets exit 2 and one clear line."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.cli.main import build_parser, main
from daemon.cli.parsing import state_dir_parent
from daemon.cli.tenants import register
from daemon.core.envelope import Credentials
from daemon.core.errors import Unauthenticated
from daemon.runtime.config import AuthConfig
from daemon.tenancy.authn import Authenticator
from daemon.tenancy.store import TenancyStore
from tests.support.cli import cli_argv, run_cli


class Shell:
    """Runs ``democratic-ai ...`` in-process against one state dir."""

    def __init__(self, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.state_dir = state_dir
        self.capsys = capsys
        self.out = self.err = ""

    def __call__(self, *argv: str) -> int:
        code = main([*argv, "--state-dir", str(self.state_dir)])
        self.out, self.err = self.capsys.readouterr()
        return code


@pytest.fixture
def sh(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Shell:
    return Shell(tmp_path / "var", capsys)


def test_an_operator_creates_and_lists_tenants(sh: Shell) -> None:
    assert sh("tenant", "create", "acme") == 0
    assert "created tenant acme (plan starter" in sh.out
    assert sh("tenant", "list") == 0
    assert sh.out.splitlines()[0].split() == ["NAME", "PLAN", "STATUS", "ID"]
    assert sh.out.splitlines()[1].split()[:3] == ["acme", "starter", "active"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("tenant", "create", "acme"), "tenant 'acme' already exists"),
        (("tenant", "create", "bad name"), "is not a tenant name"),
        (("tenant", "create", "gold-co", "--plan", "gold"), "plan: 'gold' is not one of starter"),
        (("key", "create", "--tenant", "nowhere"), "tenant 'nowhere' not found"),
        (("key", "create", "--tenant", "acme", "--rate", "5/fortnight"), "'5/fortnight' is not a rate"),
        (("key", "create", "--tenant", "acme", "--role", "god"), "role: 'god' is not one of"),
        (("key", "create", "--tenant", "acme", "--expires-days", "0"), "--expires-days: must be a positive number"),
        (("key", "revoke", "dai_00000000"), "API key 'dai_00000000' not found"),
        (("key", "list", "--tenant", "nowhere"), "tenant 'nowhere' not found"),
        (("user", "create", "x@acme.example", "--tenant", "acme", "--role", "god"), "role: 'god'"),
        (("user", "create", "not-an-email", "--tenant", "acme", "--role", "user"), "is not an e-mail"),
        (("user", "delete", "ghost@acme.example", "--tenant", "acme"), "not found in tenant 'acme'"),
        (("tenant", "export", "nowhere"), "tenant 'nowhere' not found"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(sh: Shell, argv: tuple[str, ...], message: str) -> None:
    assert sh("tenant", "create", "acme") == 0
    assert sh(*argv) == 2
    assert sh.err.startswith("democratic-ai: ") and message in sh.err
    assert len(sh.err.strip().splitlines()) == 1 and "Traceback" not in sh.err


def test_a_key_is_printed_once_listed_by_prefix_and_revoked(sh: Shell) -> None:
    sh("tenant", "create", "acme")
    assert sh("key", "create", "--tenant", "acme", "--rate", "100/min", "--expires-days", "30") == 0
    key = sh.out.strip()
    prefix = key[:12]
    assert key.startswith("dai_") and "shown once" in sh.err
    assert sh("key", "list", "--tenant", "acme") == 0
    row = sh.out.splitlines()[1].split()
    assert row[:4] == [prefix, "user", "100/min", "active"]
    assert key not in sh.out  # the key itself is never shown again
    assert sh("key", "revoke", prefix) == 0 and f"revoked {prefix}" in sh.out
    sh("key", "list", "--tenant", "acme")
    assert sh.out.splitlines()[1].split()[3] == "revoked"


def test_whoever_holds_only_the_whole_key_can_revoke_it_and_errors_never_echo_it(sh: Shell) -> None:
    sh("tenant", "create", "acme")
    assert sh("key", "create", "--tenant", "acme") == 0
    key = sh.out.strip()
    assert sh("key", "revoke", key) == 0 and f"revoked {key[:12]}" in sh.out
    sh("key", "list", "--tenant", "acme")
    assert sh.out.splitlines()[1].split()[3] == "revoked"
    unknown = key[:12] + "_" + "y" * 43
    assert sh("key", "revoke", unknown) == 2
    assert "not found" in sh.err and "y" * 43 not in sh.err  # a secret is never printed back


def test_a_user_gets_a_generated_password_or_one_from_stdin(sh: Shell, monkeypatch: pytest.MonkeyPatch) -> None:
    sh("tenant", "create", "acme")
    assert sh("user", "create", "ann@acme.example", "--tenant", "acme", "--role", "developer") == 0
    assert len(sh.out.strip()) >= 16 and "shown once" in sh.err
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough secret\n"))
    assert sh("user", "create", "bob@acme.example", "--tenant", "acme", "--role", "viewer", "--password-stdin") == 0
    assert sh.out == ""
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert sh("user", "create", "cy@acme.example", "--tenant", "acme", "--role", "user", "--password-stdin") == 2
    assert "at least 8 characters" in sh.err
    assert sh("user", "create", "bob@acme.example", "--tenant", "acme", "--role", "user") == 2
    assert "already exists" in sh.err


def test_export_and_erasure_keep_billing_ids_but_drop_the_person(sh: Shell) -> None:
    sh("tenant", "create", "acme")
    sh("user", "create", "ann@acme.example", "--tenant", "acme", "--role", "user")
    sh("key", "create", "--tenant", "acme")
    assert sh("user", "delete", "ann@acme.example", "--tenant", "acme") == 0
    assert "anonymous user:" in sh.out
    assert sh("tenant", "export", "acme") == 0
    export = json.loads(sh.out)
    assert export["tenant"]["name"] == "acme"
    assert [(u["email"], u["status"]) for u in export["users"]] == [(None, "deleted")]
    assert len(export["api_keys"]) == 1 and "hash" not in export["api_keys"][0]
    assert "ann@acme.example" not in sh.out and "argon2" not in sh.out
    assert [row["action"] for row in export["audit"]] == [
        "tenant.create", "user.create", "api_key.create", "user.delete"]  # the export audits after itself


def test_the_lead_can_merge_ledger_data_into_the_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def ledger(state_dir: Path, export: dict[str, Any]) -> dict[str, Any]:
        return {"usage": {"tenant": export["tenant"]["name"], "state_dir": str(state_dir)}}

    parser = argparse.ArgumentParser(prog="democratic-ai")
    register(parser.add_subparsers(dest="command", required=True), [state_dir_parent()], export_extra=ledger)
    for argv in (["tenant", "create", "acme"], ["tenant", "export", "acme"]):
        args = parser.parse_args([*argv, "--state-dir", str(tmp_path)])
        assert args.func(args) == 0
    export = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert export["usage"] == {"tenant": "acme", "state_dir": str(tmp_path)}


def test_every_leaf_takes_the_state_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/state:{tmp_path}/other")
    args = build_parser().parse_args(["tenant", "create", "acme"])
    assert args.func(args) == 0
    assert (tmp_path / "state" / "tenancy.db").exists()


def test_bad_input_from_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "key", "create", "--tenant", "nowhere")
    assert run.returncode == 2
    assert run.stderr == "democratic-ai: tenant 'nowhere' not found\n"


async def test_a_running_daemon_refuses_a_key_the_cli_revoked(tmp_path: Path) -> None:
    async with TenancyStore(tmp_path) as store:
        async with Authenticator(store, AuthConfig(), tmp_path, recheck_interval_s=3600) as auth:
            await store.run(store.ensure_bootstrap)
            tenant = await store.run(store.get_tenant, "default")
            _, raw = await store.run(store.create_api_key, tenant.id, "user")
            assert (await auth.authenticate(Credentials(api_key=raw))).tenant_name == "default"
            # the operator's shell is another process with its own connection
            shell = await asyncio.create_subprocess_exec(
                *cli_argv(tmp_path, "key", "revoke", raw[:12]),
                stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(shell.communicate(), 60)
            assert shell.returncode == 0, err
            await auth.recheck()  # what the daemon's 1 s tick does
            with pytest.raises(Unauthenticated, match="revoked"):
                await auth.authenticate(Credentials(api_key=raw))

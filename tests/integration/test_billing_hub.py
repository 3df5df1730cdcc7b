"""What an operator and a tenant see of billing on a running hub: the same plans and zones everywhere."""

from __future__ import annotations

import json
import time

import aiohttp

from tests.support.cli import cli_ok
from tests.support.hubproc import HubProcess, write_config

#: the hub's own starter plan: 2 calls included, 100 yen a call beyond
PLANS = '[plans.starter]\nincluded = { api_calls = 2 }\noverage = { api_calls = "100" }\n'


async def test_invoice_without_config_matches_the_hubs_own_usage_estimate(tmp_path) -> None:
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml", PLANS, modules=("echo",))).start()
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
            for n in range(5):
                async with session.post(f"{hub.url}/v1/call", json={"action": "echo", "payload": {"n": n}}) as resp:
                    assert resp.status == 200
            async with session.get(f"{hub.url}/v1/usage") as resp:
                estimate = (await resp.json())["estimated_invoice"]
    finally:
        hub.stop()
    period = time.strftime("%Y-%m", time.gmtime())
    # the operator forgets --config: the invoice still uses the plans the hub served with
    invoice = json.loads(cli_ok(tmp_path, "invoice", "--tenant", "default", "--period", period, "--json"))
    assert [line["metric"] for line in invoice["lines"]] == [None, "api_calls"]
    assert invoice["lines"] == estimate["lines"] and invoice["subtotal"] == estimate["subtotal"]


async def test_a_tenant_created_while_the_hub_runs_is_billed_in_its_own_timezone(tmp_path) -> None:
    hub = HubProcess(tmp_path, write_config(tmp_path / "hub.toml", modules=("echo",))).start()
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
            async with session.post(f"{hub.url}/v1/tenants", json={"name": "tokyo", "timezone": "Asia/Tokyo"}) as resp:
                assert resp.status == 201, await resp.text()
            async with session.post(f"{hub.url}/v1/api-keys", json={"tenant": "tokyo", "role": "tenant_admin"}) as resp:
                assert resp.status == 201, await resp.text()
                key = (await resp.json())["key"]
            async with session.get(f"{hub.url}/v1/usage", headers={"X-API-Key": key}) as resp:
                report = await resp.json()
        assert resp.status == 200 and report["tenant"] == "tokyo"
        assert report["timezone"] == "Asia/Tokyo"
    finally:
        hub.stop()

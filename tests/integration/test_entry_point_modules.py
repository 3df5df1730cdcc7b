"""A module installed by another package is found through the `democratic_ai.modules` entry points."""

from __future__ import annotations

import aiohttp

from tests.support.hubproc import HubProcess, write_config

EXTENSION = '''
from modules.sdk import Call, Module, capability


class Greeter(Module):
    name = "greet"

    @capability("text.greet", input_schema={"type": "object", "required": ["name"],
                                            "properties": {"name": {"type": "string"}}})
    async def greet(self, payload: dict, call: Call) -> dict:
        return {"greeting": f"Hello, {payload['name']}!"}
'''


async def test_a_module_from_an_entry_point_serves_calls(tmp_path, monkeypatch) -> None:
    site = tmp_path / "site"
    (site / "hubext").mkdir(parents=True)
    (site / "hubext" / "__init__.py").write_text(EXTENSION)
    dist = site / "hubext-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hubext\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[democratic_ai.modules]\ngreet = hubext:Greeter\n")
    monkeypatch.setenv("PYTHONPATH", str(site))

    state = tmp_path / "state"
    state.mkdir()
    hub = HubProcess(state, write_config(state / "hub.toml", modules=("echo", "greet"))).start()
    try:
        async with aiohttp.ClientSession(headers={"X-API-Key": hub.admin_key}) as session:
            async with session.post(f"{hub.url}/v1/call",
                                    json={"action": "text.greet", "payload": {"name": "edge"}}) as resp:
                body = await resp.json()
        assert resp.status == 200, body
        assert body["module"] == "greet" and body["result"] == {"greeting": "Hello, edge!"}
    finally:
        hub.stop()

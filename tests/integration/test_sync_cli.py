"""An operator runs fleet billing from the command line: one tenant id everywhere, then the central node's view.

Two sites (paris, lyon) write real ledgers; paris forwards two calls to lyon.  Their rows reach a
real central.db through ``CentralLedger.ingest``, as the sync receiver stores them.  Then
``sync status``, ``invoice --all-sites``, ``settlement`` and ``usage export`` read those files.
"""

from __future__ import annotations

import asyncio
import json
import stat
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest

from daemon.cli.main import main as cli_main
from daemon.metering.central import CENTRAL_FILE, CentralLedger
from daemon.metering.ledger.events import UsageEvent
from daemon.metering.ledger.reader import rows_after
from daemon.metering.ledger.writer import LEDGER_FILE, UsageLedger
from daemon.metering.plans import save_plans
from daemon.runtime.config import PlanConfig
from federation.identity import NodeIdentity
from tests.support.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "cloudevents-1.0.schema.json").read_text())
PERIOD = "2026-03"
ACME = "5f0c1a52-8f8e-4b8e-9a65-0d1c6c3f2a10"  # the id the Ansible role gives acme at every site


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


NOW = at("2026-03-20T00:00:00+00:00")  # the central node's clock while it ingests: inside March


@dataclass(frozen=True)
class Site:
    name: str
    state: Path
    node_id: str

    @property
    def ledger(self) -> Path:
        return self.state / LEDGER_FILE


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """``democratic-ai ARGV`` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    try:
        code = cli_main([str(arg) for arg in argv])
    except SystemExit as exc:  # argparse refuses bad usage by exiting (2), as it does from a shell
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    code, out, err = cli(capsys, *argv)
    assert code == 0, f"democratic-ai {argv} exited {code}: {err}"
    return out


def refused(capsys: pytest.CaptureFixture[str], *argv: str | Path, says: str, code: int = 2) -> None:
    got, _, err = cli(capsys, *argv)
    assert got == code, (argv, err)
    assert err.startswith("democratic-ai: ") and says in err, err


def hub_state(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str) -> Site:
    """A state dir as a hub leaves it: tenant acme with the fleet's id, the plans it served with, a node key."""
    state = tmp_path / name
    ok(capsys, "tenant", "create", "acme", "--id", ACME, "--state-dir", state)
    save_plans(state, {"starter": PlanConfig()})
    return Site(name, state, NodeIdentity.load_or_create(state).peer_id)


def call(ts: str, **kw: object) -> UsageEvent:
    fields: dict[str, object] = {"tenant_id": ACME, "subject": "key:abc", "action": "echo", "module": "echo",
                                 "plan": "starter", "ts": at(ts), **kw}
    return UsageEvent(**fields)  # type: ignore[arg-type]


def write(site: Site, events: list[UsageEvent]) -> None:
    async def go() -> None:
        async with UsageLedger(site.ledger) as ledger:
            await ledger.append_many(events)

    asyncio.run(go())


@dataclass(frozen=True)
class Fleet:
    paris: Site
    lyon: Site
    central: Path


@pytest.fixture
def fleet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Fleet:
    """paris: 3 calls of its own, 2 forwarded to lyon; lyon: 4 of its own, 2 served for paris, 1 of another tenant."""
    paris, lyon = hub_state(capsys, tmp_path, "paris"), hub_state(capsys, tmp_path, "lyon")
    write(paris, [
        call("2026-03-02T10:00:00+00:00", api_calls=1, compute_ms=1000.0),
        call("2026-03-03T10:00:00+00:00", api_calls=1, bytes_in=100, bytes_out=200),
        call("2026-03-04T10:00:00+00:00", api_calls=1, units={"audio_s": 2.5}),
        call("2026-03-05T10:00:00+00:00", module=f"peer:{lyon.node_id}/echo", trace_id="t-1"),
        call("2026-03-05T11:00:00+00:00", module=f"peer:{lyon.node_id}/echo", trace_id="t-2"),
    ])
    write(lyon, [
        call("2026-03-02T09:00:00+00:00", units={"audio_s": 1.5}),
        call("2026-03-05T10:00:01+00:00", kind="served", subject=f"node:{paris.node_id}", trace_id="t-1"),
        call("2026-03-05T11:00:01+00:00", kind="served", subject=f"node:{paris.node_id}", trace_id="t-2"),
        call("2026-03-06T09:00:00+00:00"),
        call("2026-03-07T09:00:00+00:00", tenant_id=str(uuid.uuid4())),  # another tenant: not acme's bill
        call("2026-03-08T09:00:00+00:00"),
        call("2026-03-09T09:00:00+00:00"),
    ])
    central = hub_state(capsys, tmp_path, "central").state
    ledger = CentralLedger(central / CENTRAL_FILE, clock=lambda: NOW)
    try:
        for site in (paris, lyon):
            assert ledger.ingest(site.node_id, site.name, rows_after(site.ledger, 0, 1000)) == 5 + 2 * (site is lyon)
    finally:
        ledger.close()
    return Fleet(paris, lyon, central)


def test_a_tenant_gets_the_same_id_at_every_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paris, lyon = tmp_path / "paris", tmp_path / "lyon"
    out = ok(capsys, "tenant", "create", "acme", "--id", ACME.upper(), "--state-dir", paris)
    assert f"id {ACME})" in out  # stored in the canonical form, whatever the operator typed
    ok(capsys, "tenant", "create", "acme", "--id", ACME, "--state-dir", lyon)
    for state in (paris, lyon):
        assert ACME in ok(capsys, "tenant", "list", "--state-dir", state)

    refused(capsys, "tenant", "create", "other", "--id", ACME, "--state-dir", paris, says="already exists")
    refused(capsys, "tenant", "create", "other", "--id", "not-a-uuid", "--state-dir", paris, says="not a UUID")
    refused(capsys, "tenant", "create", "acme", "--id", str(uuid.uuid4()), "--state-dir", paris,
            says="already exists")
    listed = ok(capsys, "tenant", "list", "--state-dir", paris)
    assert "other" not in listed and listed.count("acme") == 1
    assert "(plan starter, id " in ok(capsys, "tenant", "create", "fresh", "--state-dir", paris)  # no --id: a new one


def test_the_central_node_bills_a_tenant_across_every_site(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    each = {site.node_id: json.loads(ok(capsys, "invoice", "--tenant", "acme", "--period", PERIOD, "--json",
                                        "--state-dir", site.state))
            for site in (fleet.paris, fleet.lyon)}
    assert each[fleet.paris.node_id]["usage"]["api_calls"] == "5"
    assert each[fleet.lyon.node_id]["usage"]["api_calls"] == "4"

    whole = json.loads(ok(capsys, "invoice", "--all-sites", "--tenant", "acme", "--period", PERIOD, "--json",
                          "--state-dir", fleet.central))
    assert whole["tenant_id"] == ACME and whole["period"] == PERIOD and whole["currency"] == "JPY"
    assert whole["usage"]["api_calls"] == "9" and whole["usage"]["audio_s"] == "4"
    assert whole["ledger"]["events"] == 9
    assert {site["node_id"]: site["name"] for site in whole["sites"]} == {fleet.paris.node_id: "paris",
                                                                         fleet.lyon.node_id: "lyon"}
    for site in whole["sites"]:  # each site's line is exactly what that site bills by itself
        assert site["usage"] == each[site["node_id"]]["usage"]
    assert whole["subtotal"] == "4900"  # under the starter plan's inclusions

    # on a site, or for a tenant the centre does not know: bad input, said plainly
    refused(capsys, "invoice", "--all-sites", "--tenant", "acme", "--period", PERIOD, "--state-dir",
            fleet.paris.state, says="central billing node")
    refused(capsys, "invoice", "--all-sites", "--tenant", "nobody", "--period", PERIOD, "--state-dir",
            fleet.central, says="no tenant named")


def test_settlement_shows_what_each_site_served_for_the_other(fleet: Fleet,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    report = json.loads(ok(capsys, "settlement", "--period", PERIOD, "--json", "--state-dir", fleet.central))
    assert report["period"] == PERIOD and report["balanced"] is True
    assert len(report["pairs"]) == 1
    pair = report["pairs"][0]
    assert (pair["serving_name"], pair["origin_name"]) == ("lyon", "paris")
    assert (pair["serving_site"], pair["origin_site"]) == (fleet.lyon.node_id, fleet.paris.node_id)
    assert pair["served"]["calls"] == pair["billed"]["calls"] == 2
    assert pair["balanced"] is True and pair["unmatched_trace_ids"] == []
    ok(capsys, "settlement", "--period", PERIOD, "--check", "--state-dir", fleet.central)

    refused(capsys, "settlement", "--period", "2026-13", "--state-dir", fleet.central, says="YYYY-MM")
    refused(capsys, "settlement", "--period", PERIOD, "--state-dir", fleet.lyon.state, says="central billing node")


def test_sync_status_at_the_centre_and_at_a_site(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    status = json.loads(ok(capsys, "sync", "status", "--json", "--state-dir", fleet.central))
    sites = {site["node_id"]: site for site in status["sites"]}
    assert set(sites) == {fleet.paris.node_id, fleet.lyon.node_id}
    assert sites[fleet.lyon.node_id]["acked_seq"] == 7 and sites[fleet.paris.node_id]["acked_seq"] == 5
    for site in status["sites"]:
        assert set(site) == {"node_id", "name", "acked_seq", "lag_seconds", "last_error"}
        assert site["last_error"] is None
    assert "paris" in ok(capsys, "sync", "status", "--state-dir", fleet.central)  # the table form

    # a site that never synced: nothing acknowledged, every row behind, the central node from the config
    config = fleet.paris.state / "hub.toml"
    config.write_text('[billing]\ncentral = "12D3KooWCentral"\n')
    before = time.time()
    fresh = json.loads(ok(capsys, "sync", "status", "--json", "--config", config, "--state-dir", fleet.paris.state))
    assert fresh["central"] == "12D3KooWCentral"
    assert (fresh["head_seq"], fresh["acked_seq"], fresh["lag_events"]) == (5, 0, 5)
    assert fresh["lag_seconds"] >= before - at("2026-03-02T10:00:00+00:00")  # the oldest unacknowledged row

    # the outbox recorded an acknowledgement of seq 3 and a refusal: two rows behind, the oldest from 5 March
    outbox = fleet.paris.state / "sync" / "outbox.json"
    outbox.parent.mkdir()
    outbox.write_text(json.dumps({"central": "12D3KooWCentral", "acked_seq": 3, "acked_at": before,
                                  "head_seq": 3, "last_error": "UNAVAILABLE: central node unreachable"}))
    before = time.time()
    status = json.loads(ok(capsys, "sync", "status", "--json", "--state-dir", fleet.paris.state))
    assert set(status) == {"central", "head_seq", "acked_seq", "lag_events", "lag_seconds", "last_error"}
    assert (status["head_seq"], status["acked_seq"], status["lag_events"]) == (5, 3, 2)
    assert status["lag_seconds"] >= before - at("2026-03-05T10:00:00+00:00")
    assert status["last_error"] == "UNAVAILABLE: central node unreachable"

    # all acknowledged: no lag at all
    outbox.write_text(json.dumps({"central": "12D3KooWCentral", "acked_seq": 5, "last_error": None}))
    caught_up = json.loads(ok(capsys, "sync", "status", "--json", "--state-dir", fleet.paris.state))
    assert (caught_up["lag_events"], caught_up["lag_seconds"], caught_up["last_error"]) == (0, 0, None)

    outbox.write_text("not json")  # a state file that is not the outbox's: could not be done, said plainly
    refused(capsys, "sync", "status", "--state-dir", fleet.paris.state, says="outbox.json", code=1)


def test_usage_export_writes_cloudevents_at_a_site_and_at_the_centre(fleet: Fleet, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    site_events = json.loads(ok(capsys, "usage", "export", "--format", "cloudevents", "--state-dir",
                                fleet.lyon.state))
    assert len(site_events) == 7
    for event in site_events:
        jsonschema.validate(event, SCHEMA)
        assert event["specversion"] == "1.0" and event["type"] == "ai.democratic.usage.v1"
        assert event["source"] == fleet.lyon.node_id
    assert [event["data"]["seq"] for event in site_events] == list(range(1, 8))
    assert {event["id"] for event in site_events} == {row.event_id for row in rows_after(fleet.lyon.ledger, 0, 99)}

    since = json.loads(ok(capsys, "usage", "export", "--format", "cloudevents", "--since", "5", "--state-dir",
                          fleet.lyon.state))
    assert since == site_events[5:]
    # --state-dir before the sub-command works as well
    assert json.loads(ok(capsys, "usage", "--state-dir", fleet.lyon.state, "export", "--format",
                         "cloudevents")) == site_events

    out = tmp_path / "central-events.json"
    code, printed, err = cli(capsys, "usage", "export", "--format", "cloudevents", "--out", out, "--state-dir",
                             fleet.central)
    assert code == 0 and printed == "" and "wrote 12 events" in err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    central_events = json.loads(out.read_text())
    assert len(central_events) == 12 and len({(e["source"], e["id"]) for e in central_events}) == 12
    for event in central_events:
        jsonschema.validate(event, SCHEMA)
    assert {event["source"] for event in central_events} == {fleet.paris.node_id, fleet.lyon.node_id}
    assert sorted(e["id"] for e in central_events if e["source"] == fleet.lyon.node_id) == sorted(
        e["id"] for e in site_events)
    assert [event["data"]["seq"] for event in central_events if event["source"] == fleet.paris.node_id] == [1, 2, 3,
                                                                                                        4, 5]

    code, _, err = cli(capsys, "usage", "export", "--format", "xml", "--state-dir", fleet.lyon.state)
    assert code == 2 and "invalid choice: 'xml'" in err  # argparse's own refusal, with the usage line
    refused(capsys, "usage", "export", "--format", "cloudevents", "--since", "-1", "--state-dir", fleet.lyon.state,
            says="--since")
    refused(capsys, "usage", "export", "--format", "cloudevents", "--state-dir", tmp_path / "empty",
            says="no usage ledger")


def test_usage_summary_keeps_working_beside_usage_export(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    summary = json.loads(ok(capsys, "usage", "--tenant", "acme", "--period", PERIOD, "--state-dir", fleet.paris.state))
    assert summary["tenant_id"] == ACME and summary["usage"]["api_calls"] == "5"
    refused(capsys, "usage", "--state-dir", fleet.paris.state, says="--tenant NAME is required")
    refused(capsys, "usage", "--tenant", "acme", "export", "--format", "cloudevents", "--state-dir",
            fleet.paris.state, says="no --tenant")  # the export is the whole ledger, not one tenant's


def test_on_a_terminal_the_invoice_has_a_line_per_site_under_each_metric(
        fleet: Fleet, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    table = ok(capsys, "invoice", "--all-sites", "--tenant", "acme", "--period", PERIOD, "--state-dir", fleet.central)
    by_site = table[table.index("By site:"):].splitlines()
    calls = by_site.index("  api_calls: 9")
    assert by_site[calls + 1].split() == ["lyon", "4"] and by_site[calls + 2].split() == ["paris", "5"]
    assert "Starter Plan - Base Fee" in table
    settlement = ok(capsys, "settlement", "--period", PERIOD, "--state-dir", fleet.central).splitlines()
    assert settlement[0].split() == ["SERVING", "ORIGIN", "SERVED_CALLS", "BILLED_CALLS", "SERVED_UNITS", "BALANCED"]
    assert settlement[1].split() == ["lyon", "paris", "2", "2", "-", "yes"]


def test_the_commands_run_from_a_shell(fleet: Fleet) -> None:
    """The same commands as separate processes, as an operator types them: exit codes and streams."""
    done = run_cli(fleet.central, "sync", "status", "--json")
    assert done.returncode == 0 and len(json.loads(done.stdout)["sites"]) == 2, done.stderr
    done = run_cli(fleet.paris.state, "invoice", "--all-sites", "--tenant", "acme", "--period", PERIOD)
    assert done.returncode == 2 and done.stderr.startswith("democratic-ai: ") and "Traceback" not in done.stderr

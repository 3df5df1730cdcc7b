"""``democratic-ai sync status``, ``settlement`` and ``usage export``: fleet billing, from the state dir.

A site pushes its ledger to the central billing node; the site's outbox records what the centre
acknowledged in ``<state dir>/sync/outbox.json`` (federation/sync/outbox.py), and the centre keeps every site's rows in
``<state dir>/central.db``.  These commands read those files (and the ledger, read-only), so they
work beside a running hub, without credentials or ports, as ``peers`` and ``doctor`` do.

A state dir holding ``central.db`` is the central node's: ``sync status`` shows every site there,
``usage export`` writes every site's rows.  Anywhere else they show and export this site's own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from daemon.cli.errors import CliError, CommandFailed
from daemon.cli.ledger import ledger_path
from daemon.cli.output import note, print_json, print_table
from daemon.cli.parsing import SubParsers, add_command, add_group, state_dir_parent
from daemon.core.i18n import t
from daemon.runtime.config import HubConfig, state_dir_of

if TYPE_CHECKING:
    from daemon.metering.central import CentralReader

#: ledger rows read (and events written) per page of an export: bounded memory for any ledger size
EXPORT_PAGE = 5000
#: the one export format there is
FORMATS = ("cloudevents",)


def central_path(state_dir: Path) -> Path:
    """Where a central node keeps every site's rows, whether or not it exists."""
    from daemon.metering.central import CENTRAL_FILE

    return state_dir / CENTRAL_FILE


def open_central(state_dir: Path) -> CentralReader:
    """The central ledger of a central node's state dir, read-only (beside the hub); exit 2 anywhere else."""
    from daemon.metering.central import CentralReader

    path = central_path(state_dir)
    if not path.is_file():
        raise CliError(t("cli.sync.no_central_ledger_runs", path=path))
    return CentralReader(path)


# sync status


def site_status(state_dir: Path, central: str, now: float) -> dict[str, Any]:
    """This site's sync state: the ledger's head against what the centre acknowledged.

    ``lag_events`` counts the rows the centre has not acknowledged; ``lag_seconds`` is the age of
    the oldest of them (0 when there is none), so a stuck sync shows as a growing number.
    """
    from daemon.metering.ledger.reader import ledger_head, rows_after
    from federation.sync.outbox import OUTBOX_FILE, SyncState, SyncStateError

    try:  # absent on a site that never synced: nothing acknowledged
        outbox = SyncState.load(state_dir / OUTBOX_FILE)
    except SyncStateError as exc:
        raise CommandFailed(str(exc)) from exc
    acked = outbox.acked_seq
    path = ledger_path(state_dir)
    head = ledger_head(path)[0]
    lag_seconds = 0.0
    if head > acked:
        oldest = rows_after(path, acked, 1)
        if oldest:
            lag_seconds = max(0.0, round(now - oldest[0].ts_us / 1e6, 3))
    return {"central": outbox.central or central, "head_seq": head, "acked_seq": acked,
            "lag_events": max(0, head - acked), "lag_seconds": lag_seconds, "last_error": outbox.last_error or None}


def central_status(state_dir: Path) -> dict[str, Any]:
    """Every site the central node has heard from: what it holds of each, how far behind, its last refusal."""
    return {"sites": [{"node_id": site.node_id, "name": site.name, "acked_seq": site.acked_seq,
                       # None: the site was heard from (a refused batch) but no row of it is held yet
                       "lag_seconds": None if site.lag_seconds is None else max(0.0, round(site.lag_seconds, 3)),
                       "last_error": site.last_error or None}
                      for site in open_central(state_dir).sites()]}


def cmd_sync_status(args: argparse.Namespace) -> int:
    """``sync status``: every site (on the central node) or this site against its central node."""
    state_dir = state_dir_of(args)
    if central_path(state_dir).is_file():
        status = central_status(state_dir)
        if args.json:
            print_json(status)
        elif not status["sites"]:
            note(t("cli.sync.no_site_yet"))
        else:
            print_table(["NODE", "SITE", "ACKED_SEQ", "LAG_S", "LAST_ERROR"], [
                [s["node_id"], s["name"], s["acked_seq"], _seconds(s["lag_seconds"]), s["last_error"] or "-"]
                for s in status["sites"]])
        return 0
    config = HubConfig.from_toml(args.config) if args.config else None
    status = site_status(state_dir, config.billing.central if config else "", time.time())
    if args.json:
        print_json(status)
        return 0
    if not status["central"]:
        note(t("cli.sync.no_central"))
    print_table(["CENTRAL", "HEAD_SEQ", "ACKED_SEQ", "LAG_EVENTS", "LAG_S", "LAST_ERROR"], [
        [status["central"] or "-", status["head_seq"], status["acked_seq"], status["lag_events"],
         _seconds(status["lag_seconds"]), status["last_error"] or "-"]])
    return 0


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# settlement


def cmd_settlement(args: argparse.Namespace) -> int:
    """``settlement``: per ordered pair of sites, what one served for the other, as both sides recorded it."""
    from daemon.metering.billing import parse_period

    period = parse_period(args.period)
    if period.cycle != "monthly":
        raise CliError(t("cli.sync.period_settlement_monthly_yyyy", period=args.period))
    pairs = open_central(state_dir_of(args)).settlement(period.label)
    balanced = all(pair["balanced"] for pair in pairs)
    if args.json or not sys.stdout.isatty():
        print_json({"period": period.label, "balanced": balanced, "pairs": pairs})
    elif pairs:
        print_table(["SERVING", "ORIGIN", "SERVED_CALLS", "BILLED_CALLS", "SERVED_UNITS", "BALANCED"],
                    [_pair_row(pair) for pair in pairs])
    else:
        note(t("cli.sync.no_cross_site", period=period.label))
    if not balanced:
        note(t("cli.sync.unbalanced"))
        if args.check:
            raise CommandFailed(f"settlement for {period.label} does not balance")
    return 0


def _pair_row(pair: dict[str, Any]) -> list[str]:
    """One pair of the table: the calls as the serving side ("served") and the origin ("billed") recorded them."""
    units = pair["served"]["units"]
    return [pair["serving_name"] or pair["serving_site"], pair["origin_name"] or pair["origin_site"],
            str(pair["served"]["calls"]), str(pair["billed"]["calls"]),
            ",".join(f"{key}={value:g}" for key, value in sorted(units.items())) or "-",
            "yes" if pair["balanced"] else "NO"]


# usage export


def cmd_usage_export(args: argparse.Namespace) -> int:
    """``usage export``: the ledger (this site's, or every site's on the central node) as CloudEvents 1.0."""
    if getattr(args, "tenant", None) or getattr(args, "period", None):
        raise CliError(t("cli.sync.usage_export_takes_no"))
    if args.since < 0:
        raise CliError(t("cli.sync.since_not_ledger_seq", since=args.since))
    state_dir = state_dir_of(args)
    if central_path(state_dir).is_file():
        count = _export(args.out, _central_pages(open_central(state_dir), args.since))
    else:
        count = _export(args.out, _site_pages(state_dir, args.since))
    if args.out:
        note(t("cli.sync.wrote", count=count, out=args.out))
    return 0


def _site_pages(state_dir: Path, since: int) -> Iterator[list[dict[str, Any]]]:
    """This site's rows after ``since``, a page at a time, with this node's id as their source.

    Checked before the first page, so bad input is refused before a byte is written.
    """
    from daemon.metering.cloudevents import cloudevents
    from daemon.metering.ledger.reader import rows_after
    from federation.identity import NODE_KEY_FILE, NodeIdentity

    path = ledger_path(state_dir)
    if not path.is_file():
        raise CliError(t("cli.cli_billing.no_usage_ledger_hub", path=path))
    # the site's stable name in the fleet; an export never makes a key (the hub makes its own at start)
    if not (state_dir / NODE_KEY_FILE).is_file():
        raise CliError(t("cli.sync.no_node_key_start", state_dir=state_dir))
    source = NodeIdentity.load_or_create(state_dir).peer_id

    def pages() -> Iterator[list[dict[str, Any]]]:
        seq = since
        while rows := rows_after(path, seq, EXPORT_PAGE):
            yield cloudevents((source, row) for row in rows)
            seq = rows[-1].seq

    return pages()


def _central_pages(central: CentralReader, since: int) -> Iterator[list[dict[str, Any]]]:
    """Every site's rows the central node holds, a page at a time, in arrival order.

    At the centre ``since`` counts rows in arrival order (the centre's own numbering, across
    sites), so an export can resume where the last one stopped: ``--since`` the number it wrote.
    """
    from daemon.metering.cloudevents import cloudevents

    cursor = since
    while pairs := central.rows(cursor, EXPORT_PAGE):
        yield cloudevents(pairs)
        cursor += len(pairs)


def _export(out: str | None, pages: Iterable[list[dict[str, Any]]]) -> int:
    """Write the events as one JSON array (CloudEvents' JSON batch format); to ``out`` whole, or to stdout."""
    if not out:
        return _write_batch(sys.stdout, pages)
    target = Path(out)
    if target.is_dir():
        raise CliError(t("cli.sync.out_directory", out=out))
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        # 0600: usage is the tenants' business; written whole, then renamed, so a reader never sees half
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except FileNotFoundError:
        raise CliError(t("cli.sync.out_folder_does_not", out=out)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            count = _write_batch(handle, pages)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def _write_batch(handle: IO[str], pages: Iterable[list[dict[str, Any]]]) -> int:
    """Stream a JSON array, one event per line, without holding more than a page in memory."""
    count = 0
    handle.write("[")
    for page in pages:
        for event in page:
            handle.write(("\n" if count == 0 else ",\n") + json.dumps(event, ensure_ascii=False, sort_keys=True))
            count += 1
    handle.write("\n]\n" if count else "]\n")
    return count


# registration


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``sync status`` and ``settlement``."""
    sync = add_group(subparsers, "sync", "usage sync to the central billing node")
    status = add_command(sync, "status", parents, "last acknowledged seq, lag in events and seconds, last error: "
                         "for this site, or for every site on the central node", cmd_sync_status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.add_argument("--config", help="the hub's TOML config, for [billing] central when this site has not "
                        "synced yet")
    settlement = add_command(subparsers, "settlement", parents, "on the central node: the calls and units each "
                             "site served for each other site in a month", cmd_settlement)
    settlement.add_argument("--period", required=True, metavar="YYYY-MM")
    settlement.add_argument("--json", action="store_true", help="JSON even on a terminal")
    settlement.add_argument("--check", action="store_true",
                            help="exit 1 when the serving and the origin sides do not agree")


def register_usage_export(usage: SubParsers, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``usage export`` under ``usage`` (billing.py's ``usage_subcommands`` hook)."""
    export = add_command(usage, "export", [_keeping_state_dir(parent) for parent in parents],
                         "the ledger as CloudEvents 1.0 (JSON batch mode): this site's, or every site's on the "
                         "central node", cmd_usage_export)
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--since", type=int, default=0, metavar="SEQ",
                        help="only the events after this seq (default 0: all); on the central node, after this "
                        "many rows in the order they arrived, so the count the last export wrote resumes it")
    export.add_argument("--out", metavar="FILE", help="write the batch to FILE (0600) instead of stdout")


def _keeping_state_dir(parent: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parent``, or when it gives ``--state-dir``, a fresh one whose ``--state-dir`` has no default.

    argparse copies a sub-command's defaults over its parent's values, so with a default of None
    here ``usage --state-dir D export`` would lose D.  A fresh parser: the actions of ``parent``
    are shared by every command, and their defaults must stay.
    """
    if not any(action.dest == "state_dir" for action in parent._actions):
        return parent
    fresh = state_dir_parent()
    for action in fresh._actions:
        if action.dest == "state_dir":
            action.default = argparse.SUPPRESS
    return fresh

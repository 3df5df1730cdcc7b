"""``democratic-ai backup DEST`` and ``restore SRC``: the state dir's lasting part, copied whole.

Backup runs beside a serving hub.  The two databases are copied with SQLite's online backup API,
each in one step: the copy is the database as of one read transaction, so it holds every commit
made before it began (every receipt already acknowledged: usage is durable before the reply) and
no half of a later one.  The ledger writer's own process keeps writing in WAL mode meanwhile.
Beside them go the keys and certificates (jwt.secret, bootstrap-admin.key when still there,
tls/*, the node key and fleet certificate), plans.json and the usage sync's acknowledgement
(central.db too, on a central billing node); runtime state (endpoints.json, peers.json, logs,
the model cache) does not.
``manifest.json`` lists each file's sha256 and size and the hub's version.  Every file is 0600,
DEST 0700.

Restore checks every sha256 before it writes anything, refuses a state dir that is not empty,
copies (checking the sha256 again as it copies), then verifies the ledger's chain.

Exit codes: 2 for bad input (a DEST or state dir that is not empty, SRC not a backup, a file in
it that does not match the manifest), 1 when the work could not be done (the disk, a database,
a restored ledger whose chain does not verify).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sqlite3
from pathlib import Path, PurePosixPath
from typing import Any

from daemon import __version__
from daemon.cli.errors import CliError, CommandFailed
from daemon.cli.output import note, print_json
from daemon.cli.parsing import SubParsers, add_command
from daemon.core.i18n import t
from daemon.runtime.config import state_dir_of

MANIFEST = "manifest.json"
FORMAT = 1
#: central.db only on a central billing node: every site's usage
DATABASES = ("tenancy.db", "ledger.db", "central.db")
#: the other files a backup holds, when present; tls/ is taken whole.  node.key is the hub's identity
#: in its fleet (its certificate is for that key); sync/outbox.json is what the centre acknowledged
KEY_FILES = ("jwt.secret", "bootstrap-admin.key", "plans.json", "node.key", "fleet/node.cert", "sync/outbox.json")
TLS_DIR = "tls"
_CHUNK = 1 << 20


def cmd_backup(args: argparse.Namespace) -> int:
    """Copy the state dir's databases (online), keys and certificates into DEST, with a manifest."""
    state_dir = state_dir_of(args)
    dest = Path(args.dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise CliError(t("cli.backup.exists_not_empty_directory", dest=dest))
    if not any((state_dir / name).is_file() for name in DATABASES):
        raise CliError(t("cli.backup.holds_no_tenancy_db", state_dir=state_dir))
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest.chmod(0o700)
    files: dict[str, dict[str, Any]] = {}
    for name in DATABASES:
        if (state_dir / name).is_file():
            backup_database(state_dir / name, dest / name)
            files[name] = describe(dest / name)
    for name in (*KEY_FILES, *_tls_files(state_dir)):
        if (state_dir / name).is_file():
            copy_private(state_dir / name, dest / name)
            files[name] = describe(dest / name)
    manifest = {"format": FORMAT, "hub_version": __version__, "source": str(state_dir.resolve()),
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "files": files}
    _write_private(dest / MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n")
    print_json(manifest)
    note(t("cli.backup.done", count=len(files), dest=dest))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Check SRC against its manifest, copy it into an empty state dir, verify the restored ledger."""
    from daemon.metering.ledger.chain import verify

    src = Path(args.src)
    state_dir = state_dir_of(args)
    files = read_manifest(src)
    for name, expected in files.items():
        problem = mismatch(src / name, expected)
        if problem:
            raise CliError(t("cli.backup.backup_damaged_altered_nothing", path=src / name, problem=problem))
    if state_dir.exists() and (not state_dir.is_dir() or any(state_dir.iterdir())):
        held = ", ".join(sorted(p.name for p in state_dir.iterdir())[:5]) if state_dir.is_dir() else "a file"
        raise CliError(t("cli.backup.state_dir_not_empty", state_dir=state_dir, held=held))
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_dir.chmod(0o700)
    for name, expected in files.items():
        digest = copy_private(src / name, state_dir / name)
        if digest != expected["sha256"]:  # changed between the check and the copy
            raise CommandFailed(f"{src / name} changed while it was restored; restore into an empty dir again")
    report: dict[str, Any] = {"restored": sorted(files), "state_dir": str(state_dir)}
    ledger = state_dir / "ledger.db"
    if "ledger.db" in files:
        result = verify(ledger)
        report["ledger"] = result.to_dict()
        print_json(report)
        if not result.ok:
            raise CommandFailed(f"restored ledger does not verify (seq {result.first_bad_seq}): {result.reason}")
    else:
        report["ledger"] = None
        print_json(report)
        note(t("cli.backup.no_ledger"))
    return 0


def backup_database(source: Path, target: Path) -> None:
    """``source`` as of one read transaction, into ``target`` (0600), through SQLite's backup API."""
    _write_private(target, b"")  # SQLite takes an empty file as a new database; made 0600 first
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        src.execute("PRAGMA busy_timeout=10000")
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # pages=-1: one step, one read transaction, so one consistent state
            # the copy keeps the source's WAL mode; a backup is a single file
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()


def read_manifest(src: Path) -> dict[str, dict[str, Any]]:
    """The manifest's files, each name checked to be one a backup writes; CliError when SRC is not a backup."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(t("cli.backup.not_democratic_ai_backup", src=src, manifest=MANIFEST, exc=exc)) from None
    for name, entry in files.items():
        if not _allowed(name) or not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise CliError(t("cli.backup.names_which_no_backup", path=src / MANIFEST, name=name))
    return files


def mismatch(path: Path, expected: dict[str, Any]) -> str | None:
    """Why ``path`` is not the file the manifest describes (missing, size, sha256), or None."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "is missing"
    if size != expected.get("size"):
        return f"is {size} bytes, the manifest says {expected.get('size')}"
    if sha256_of(path) != expected["sha256"]:
        return "does not match its sha256 in the manifest"
    return None


def describe(path: Path) -> dict[str, Any]:
    """A manifest entry: the file's sha256 and size."""
    return {"sha256": sha256_of(path), "size": path.stat().st_size}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def copy_private(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target`` (0600; its directory 0700, made if needed); the sha256 of what was copied."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    h = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, source.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _tls_files(state_dir: Path) -> list[str]:
    tls = state_dir / TLS_DIR
    return sorted(f"{TLS_DIR}/{p.name}" for p in tls.iterdir() if p.is_file()) if tls.is_dir() else []


def _allowed(name: str) -> bool:
    """Only the names a backup writes: never an absolute path, a ``..`` or anything outside tls/."""
    if name in DATABASES or name in KEY_FILES:
        return True
    parts = PurePosixPath(name).parts
    return len(parts) == 2 and parts[0] == TLS_DIR and parts[1] not in ("", ".", "..") and "\\" not in name


def register(subparsers: SubParsers, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``backup`` and ``restore``."""
    backup = add_command(subparsers, "backup", parents, "copy the state dir (databases online, keys, "
                         "certificates) into DEST with a sha256 manifest", cmd_backup)
    backup.add_argument("dest", metavar="DEST", help="a new or empty directory (made 0700)")
    restore = add_command(subparsers, "restore", parents, "bring a backup back into an empty state dir "
                          "and verify its ledger", cmd_restore)
    restore.add_argument("src", metavar="SRC", help="a directory democratic-ai backup wrote")

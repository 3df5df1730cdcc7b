"""What ``democratic-ai doctor`` checks, one function per concern: paths and values in, findings out.

Each check returns :class:`Finding` records (``ok``, ``warn`` or ``error``, what was found, what
to do about it) and never prints or exits: doctor.py runs them, gathers what they need from the
machine (a bound port, a running hub's /health, ``systemd-analyze``) and prints.  An ``error`` is
something the hub cannot serve with or an operator must fix now; a ``warn`` works today but
should be looked at.
"""

from __future__ import annotations

import datetime
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509

from daemon.metering.ledger.chain import VerifyResult
from daemon.runtime.tls import RENEW_BEFORE
from modules.model_files import ModelFile, ModelLoadError, verify

Level = Literal["ok", "warn", "error"]

#: state-dir files only the hub's user may read: keys, the JWT secret, password hashes, the ledger
SECRET_FILES = ("bootstrap-admin.key", "jwt.secret", "tls/http3-key.pem", "tenancy.db", "ledger.db")
#: the unit's ``systemd-analyze security`` exposure above which doctor warns (issue 12's bar)
UNIT_SCORE_MAX = 2.0
_SCORE = re.compile(r"Overall exposure level for \S+:\s*([0-9.]+)")


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the report: its level, what was checked and found, and what to do (empty when ok)."""

    level: Level
    what: str
    fix: str = ""

    def line(self) -> str:
        """``error  what: fix`` as doctor prints it, the level padded so the lines align."""
        return f"{self.level:<5}  {self.what}" + (f"; to do: {self.fix}" if self.fix else "")

    def to_dict(self) -> dict[str, str]:
        """The ``--json`` form of the finding."""
        return {"level": self.level, "what": self.what, "fix": self.fix}


def check_modes(state_dir: Path, *, euid: int) -> list[Finding]:
    """The state dir is 0700 and owned by ``euid``; each secret that exists is 0600 and owned alike.

    A secret readable by others inside a 0700 dir is a warning (nobody else can reach it today;
    a later chmod of the dir would expose it); inside an open dir it is an error.
    """
    try:
        st = state_dir.stat()
    except FileNotFoundError:
        return [Finding("warn", f"state dir {state_dir} does not exist",
                        "the hub makes it at first start; check --state-dir if one was expected")]
    findings: list[Finding] = []
    dir_open = bool(st.st_mode & 0o077)
    if dir_open:
        findings.append(Finding("error", f"state dir {state_dir} is mode {_mode(st.st_mode)}, open to others",
                                f"chmod 700 {state_dir}"))
    if st.st_uid != euid:
        findings.append(Finding("warn", f"state dir {state_dir} is owned by uid {st.st_uid}, not this user "
                                f"(uid {euid})", "run doctor as the hub's user, or chown the dir to it"))
    for name in SECRET_FILES:
        path = state_dir / name
        try:
            fst = path.lstat()
        except FileNotFoundError:
            continue
        if fst.st_mode & 0o077:
            level: Level = "error" if dir_open else "warn"
            findings.append(Finding(level, f"{path} is mode {_mode(fst.st_mode)}, readable beyond its owner",
                                    f"chmod 600 {path}"))
        if fst.st_uid != st.st_uid:
            findings.append(Finding("error", f"{path} is owned by uid {fst.st_uid}, the state dir by {st.st_uid}",
                                    f"chown {st.st_uid} {path}"))
    if not findings:
        findings.append(Finding("ok", f"state dir {state_dir}: 0700, secrets 0600, one owner"))
    return findings


def check_models(files: dict[str, list[ModelFile]], missing: dict[str, str],
                 optional: frozenset[str] = frozenset({"text.summarize"})) -> list[Finding]:
    """Every enabled module's model files exist and match their manifest's sha256.

    ``files`` maps a module to its files, ``missing`` a module to why its files could not be
    located.  A module in ``optional`` runs without them (text.summarize falls back to frequency
    scoring), so a problem there is a warning.
    """
    findings: list[Finding] = []
    for module, why in sorted(missing.items()):
        findings.append(Finding("warn" if module in optional else "error", f"module {module}: {why}",
                                "reinstall the hub (its package ships the model files)"))
    for module, models in sorted(files.items()):
        if not models:
            continue
        bad = []
        for model in models:
            try:
                verify(model)
            except ModelLoadError as exc:
                bad.append(str(exc))
        unverified = [str(m.path) for m in models if m.sha256 is None]
        for problem in bad:
            findings.append(Finding("warn" if module in optional else "error", f"module {module}: {problem}",
                                    "reinstall the hub (its package ships the model files), or fix the "
                                    f'modules.options."{module}" model path and sha256'))
        if not bad and unverified:
            findings.append(Finding("warn", f"module {module}: {', '.join(unverified)} has no sha256 to check",
                                    f'set modules.options."{module}".sha256'))
        elif not bad:
            findings.append(Finding("ok", f"module {module}: {len(models)} model file(s), sha256 as the manifest"))
    return findings


def check_ledger(result: VerifyResult, path: Path) -> Finding:
    """``ledger verify``'s result as a finding; a ledger not yet made is a warning, not an error."""
    if result.ok:
        return Finding("ok", f"ledger {path}: chain verified ({result.count} entries)")
    if not path.exists():
        return Finding("warn", f"ledger {path} does not exist", "normal before the hub's first call")
    where = f" at seq {result.first_bad_seq}" if result.first_bad_seq else ""
    return Finding("error", f"ledger {path} does not verify{where}: {result.reason}",
                   "stop the hub and restore the last good backup (democratic-ai restore)")


def check_certificate(path: Path, now: datetime.datetime, *, self_signed: bool) -> Finding:
    """A certificate the doors serve: unreadable or expired is an error, ending within RENEW_BEFORE a warning."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        if self_signed and isinstance(exc, FileNotFoundError):
            return Finding("ok", f"TLS: {path} not made yet (the hub makes it at start)")
        return Finding("error", f"TLS certificate {path} cannot be read: {exc}", "set a valid PEM certificate")
    ends = cert.not_valid_after_utc
    renew = ("restart the hub: it makes a new self-signed one at start" if self_signed
             else "renew it and restart the hub")
    if ends <= now:
        return Finding("error", f"TLS certificate {path} expired on {ends:%Y-%m-%d}", renew)
    if ends - now < RENEW_BEFORE:
        return Finding("warn", f"TLS certificate {path} ends on {ends:%Y-%m-%d}, in {(ends - now).days} days",
                       renew)
    return Finding("ok", f"TLS certificate {path} valid until {ends:%Y-%m-%d}")


def check_port(door: str, listen: str, *, bind_error: str | None, hub_ports: set[int], hub_healthy: bool,
               port: int) -> Finding:
    """Whether a door's port is free, held by the running hub (its /health answering), or taken by another."""
    if port == 0:
        return Finding("ok", f"{door} {listen}: port 0, a free port is picked at start")
    if bind_error is None:
        return Finding("ok", f"{door} {listen}: free")
    if port in hub_ports and hub_healthy:
        return Finding("ok", f"{door} {listen}: held by the running hub (its /health answers)")
    if port in hub_ports:
        return Finding("error", f"{door} {listen}: held by a hub whose /health does not answer",
                       "look at `systemctl status democratic-ai` and its journal")
    return Finding("error", f"{door} {listen}: cannot be bound ({bind_error})",
                   "stop what holds the port (`ss -ltnup`), or change the listen address")


def parse_security_score(output: str) -> float | None:
    """The exposure from ``systemd-analyze security`` output (``Overall exposure level for x: 8.3 EXPOSED``)."""
    match = _SCORE.search(output)
    return float(match.group(1)) if match else None


def check_unit_score(unit: Path, score: float | None, output: str) -> Finding:
    """The unit's exposure: above UNIT_SCORE_MAX a warning, unreadable output a warning that shows it."""
    if score is None:
        return Finding("warn", f"unit {unit}: systemd-analyze gave no score ({output.strip()[-200:]})",
                       f"run `systemd-analyze security --offline=yes {unit}`")
    if score > UNIT_SCORE_MAX:
        return Finding("warn", f"unit {unit}: exposure {score} (more than {UNIT_SCORE_MAX})",
                       "install the hardened unit the package ships; drop-ins may have weakened it")
    return Finding("ok", f"unit {unit}: exposure {score}")


def check_federation() -> Finding:
    """Peers, their clock skew and the central billing link: federation is not built, so there are none."""
    return Finding("ok", "peers, clock skew, central billing: no peers configured (federation is not built yet)")


def _mode(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"

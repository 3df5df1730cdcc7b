"""Fresh Debian systems for the system tests: a cached debootstrap tree, chroots into it, the hub's .deb.

Every tree is the host's own release (the codename in /etc/os-release) from the host's own mirror (the
first ``deb`` source in /etc/apt/sources.list or sources.list.d, one-line or deb822), so the .deb built
here installs against the same libraries it was built with. The debootstrap result is cached as a tarball
under /var/cache/democratic-ai-tests/, keyed by codename, mirror and package list: the first session pays
a few minutes, later ones unpack it in seconds.

All of it needs root (debootstrap, chroot, mount): ``needs_root_and_tools`` gives the reason to skip.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.hubproc import ROOT

CACHE_DIR = Path("/var/cache/democratic-ai-tests")
#: unshare(2)'s flag for a new mount namespace (<sched.h>); os.unshare arrives only in Python 3.12
CLONE_NEWNS = 0x00020000
#: what the tests need inside a tree on top of minbase: python3 (the hub's interpreter, and Ansible's
#: remote python with python3-apt for its apt module), systemd (systemd-sysusers and systemd-tmpfiles run
#: by the .deb's maintainer scripts; it is not started in a chroot), curl and iproute2 to look at a hub
INCLUDE: tuple[str, ...] = ("python3", "python3-apt", "ca-certificates", "iproute2", "curl", "systemd")
#: the commands the system tests run, and the Debian package each one comes in
TOOLS: Mapping[str, str] = {
    "debootstrap": "debootstrap",
    "dpkg-buildpackage": "dpkg-dev",
    "dh": "debhelper",
    "fakeroot": "fakeroot",
    "lintian": "lintian",
    "pkg-config": "pkg-config",
}
#: the environment inside a chroot: nothing of the host's (pyenv's PATH, a venv) leaks in
CHROOT_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}


def needs_root_and_tools() -> str | None:
    """Why the system tests cannot run here, or None: they need root and the tools (installed when missing)."""
    if os.geteuid() != 0:
        return "the system tests need root (debootstrap, chroot, mount): run them as root"
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return None
    if shutil.which("apt-get") is None:
        return f"{', '.join(missing)} missing and no apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    installed = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True,
                               text=True, timeout=900, check=False)
    if installed.returncode != 0:  # the lists may be stale or absent on a fresh machine
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
        installed = subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, capture_output=True,
                                   text=True, timeout=900, check=False)
    if installed.returncode != 0:
        return f"cannot install {', '.join(missing)}: {installed.stderr.strip()[-500:]}"
    return None


def host_codename() -> str:
    """The host's release codename (``VERSION_CODENAME`` in /etc/os-release)."""
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    raise RuntimeError("/etc/os-release names no VERSION_CODENAME: not a Debian release this can bootstrap")


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, ""
        elif line[0] in " \t" and key:  # a continuation line
            stanza[key] += " " + line.strip()
        else:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()


def _sources() -> Iterator[tuple[str, list[str]]]:
    """(uri, suites) of every enabled ``deb`` source, in the order apt reads them."""
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list")),
             *sorted((apt / "sources.list.d").glob("*.sources"))]
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".sources":
            for stanza in _deb822_stanzas(path.read_text()):
                if "deb" in stanza.get("types", "").split() and stanza.get("enabled", "yes").lower() != "no":
                    for uri in stanza.get("uris", "").split():
                        yield uri, stanza.get("suites", "").split()
            continue
        for line in path.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] != ["deb"]:
                continue
            words = words[1:]
            if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 2:
                yield words[0], [words[1]]


def host_mirror(codename: str | None = None) -> str:
    """The first mirror the host's apt sources use for its own release."""
    codename = codename or host_codename()
    for uri, suites in _sources():
        if codename in suites:
            return uri
    raise RuntimeError(f"no deb source in /etc/apt serves {codename}")


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive lock across processes: two test sessions never debootstrap the same tree at once."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def debian_base_tarball(extra: Sequence[str] = ()) -> Path:
    """A debootstrap minbase tree of the host's release, with INCLUDE (and ``extra``), as a cached tarball."""
    codename = host_codename()
    mirror = host_mirror(codename)
    include = sorted({*INCLUDE, *extra})
    key = hashlib.sha256("\n".join([codename, mirror, *include]).encode()).hexdigest()[:16]
    tarball = CACHE_DIR / f"debian-{codename}-minbase-{key}.tar"
    with _locked(tarball.name):
        if tarball.exists():
            return tarball
        with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix=".bootstrap-") as work:
            tree = Path(work) / "tree"
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(include)}", codename, str(tree), mirror],
                capture_output=True, text=True, timeout=1800, check=False)
            if result.returncode != 0:
                log = tree / "debootstrap" / "debootstrap.log"
                detail = log.read_text(errors="replace")[-3000:] if log.exists() else result.stderr[-3000:]
                raise RuntimeError(f"debootstrap {codename} from {mirror} failed:\n{result.stdout[-2000:]}\n{detail}")
            # the downloaded .debs are not part of a system, and the tarball is unpacked many times
            subprocess.run(["chroot", str(tree), "apt-get", "clean"], env=dict(CHROOT_ENV), check=True, timeout=120)
            partial = Path(work) / "tree.tar"
            subprocess.run(["tar", "--numeric-owner", "--xattrs", "-cpf", str(partial), "-C", str(tree), "."],
                           check=True, timeout=900)
            partial.rename(tarball)  # the same file system: atomic, so a reader never sees half a tarball
    return tarball


def unpack_tree(tarball: Path, dest: Path) -> Path:
    """Unpack ``tarball`` (owners, modes and device nodes kept) into ``dest``; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "-xpf", str(tarball), "-C", str(dest)],
                   check=True, timeout=900)
    return dest


def _mounts_under(tree: Path) -> list[Path]:
    root = tree.resolve()
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = Path(line.split()[4].replace("\\040", " "))
        if point == root or root in point.parents:
            found.append(point)
    return found


@contextmanager
def mounted(tree: Path) -> Iterator[Path]:
    """/proc, a read-only /sys, and tmpfs on /dev/shm and /run mounted in ``tree`` while inside; the host's DNS.

    /dev is not bind-mounted from the host (a stray ``rm -rf`` of the tree would reach it): debootstrap
    made the device nodes a system needs (null, zero, random, urandom, tty ...), and the tarball keeps them.
    Everything mounted here is unmounted on the way out, deepest first, even after an error.
    """
    plan = [
        (["-t", "proc", "proc"], tree / "proc"),
        (["-t", "sysfs", "-o", "ro", "sysfs"], tree / "sys"),
        (["-t", "tmpfs", "-o", "mode=1777,size=256m", "tmpfs"], tree / "dev" / "shm"),
        (["-t", "tmpfs", "-o", "mode=0755,size=64m", "tmpfs"], tree / "run"),
    ]
    done: list[Path] = []
    try:
        for args, point in plan:
            point.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *args, str(point)], check=True, capture_output=True, timeout=30)
            done.append(point)
        resolv = tree / "etc" / "resolv.conf"
        if resolv.is_symlink():
            resolv.unlink()
        if Path("/etc/resolv.conf").exists():
            shutil.copyfile("/etc/resolv.conf", resolv)
        yield tree
    finally:
        for point in reversed(_mounts_under(tree)):  # also whatever a test mounted below the tree
            if subprocess.run(["umount", str(point)], capture_output=True, timeout=30, check=False).returncode:
                subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30, check=False)


def private_mount_namespace() -> bool:
    """Move this process (and every child it starts afterwards) into a mount namespace of its own.

    The trees' mounts (/proc, /sys, tmpfs; debootstrap's own) then never reach the host's namespace:
    a test session killed with SIGKILL leaves none behind, since the namespace and its mounts die with
    its last process. Called once, early (before any thread); False where it cannot be done (not root,
    or threads already running), and the mounts are then the host's, unmounted by ``mounted`` as before.
    """
    if os.geteuid() != 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        return False
    # a new namespace keeps the host's shared propagation: made private, nothing mounted here goes back
    subprocess.run(["mount", "--make-rprivate", "/"], check=True, capture_output=True, timeout=30)
    return True


def chroot_command(tree: Path, *argv: str) -> list[str]:
    """The argv that runs ``argv`` inside ``tree``."""
    return ["chroot", str(tree), *argv]


def chroot_run(tree: Path, *argv: str, env: Mapping[str, str] | None = None, check: bool = True,
               timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``tree`` (mounted) with a clean environment; output captured as text.

    No policy-rc.d is needed: systemd is not PID 1 in a chroot, so deb-systemd-invoke starts nothing.
    With ``check`` a non-zero exit raises with the command's output in the message.
    """
    result = subprocess.run(chroot_command(tree, *argv), env={**CHROOT_ENV, **(env or {})}, input=input,
                            capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode} in {tree}:\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def chroot_popen(tree: Path, *argv: str, log: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside ``tree`` in the background, stdout and stderr to ``log`` (a host path)."""
    with log.open("ab") as out:
        return subprocess.Popen(chroot_command(tree, *argv), env={**CHROOT_ENV, **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def remove_tree(tree: Path) -> None:
    """Delete a tree, refusing while anything is still mounted inside it."""
    left = _mounts_under(tree)
    assert not left, f"still mounted in {tree}: {left}"
    shutil.rmtree(tree, ignore_errors=True)


def built_deb() -> Path:
    """Run ``make deb`` (the tests' session fixture calls it once) and return the .deb it printed.

    The .deb stays in build/deb/ until the next ``make deb``: a caller that runs beside another session
    copies it before use.
    """
    # the wheels pip downloads are kept next to the base tarballs: a second session builds offline-fast
    env = {**os.environ, "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(CACHE_DIR / "pip"))}
    with _locked("make-deb"):  # two sessions (the .deb tests, the Ansible tests) share build/deb
        result = subprocess.run(["make", "--no-print-directory", "deb"], cwd=ROOT, capture_output=True, text=True,
                                timeout=3600, check=False, env=env)
    if result.returncode != 0:
        raise AssertionError(f"make deb failed ({result.returncode}):\n"
                             f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    deb = Path(lines[-1]) if lines else Path()
    if not deb.is_absolute():
        deb = ROOT / deb
    assert deb.suffix == ".deb" and deb.is_file(), f"make deb printed no .deb path last:\n{result.stdout[-3000:]}"
    return deb

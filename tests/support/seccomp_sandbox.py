"""Run a command under the seccomp filters democratic-ai.service has systemd install, without systemd:

    python -m tests.support.seccomp_sandbox [--mdwe] -- COMMAND...

- ``SystemCallFilter=@system-service`` + ``~@privileged @resources`` with ``SystemCallErrorNumber=EPERM``:
  every call outside the allow list fails with EPERM (the groups are read from ``systemd-analyze
  syscall-filter``, so the list is this systemd's own);
- ``--mdwe``: ``MemoryDenyWriteExecute=yes`` as systemd builds it: mmap asking for write and execute,
  mprotect/pkey_mprotect adding execute, shmat with SHM_EXEC fail with EPERM.

The filters pass to every child (the ledger writer).  Namespaces, the read-only file system and the
other sandboxing settings need systemd itself and are not reproduced.  libseccomp is driven through
ctypes: it is on every machine that has systemd.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

_ALLOW = 0x7FFF0000
_MASKED_EQ = 7  # SCMP_CMP_MASKED_EQ
_EPERM = 1
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 0x2, 0x4, 0o100000


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)  # SCMP_ACT_ERRNO


def _libseccomp() -> ctypes.CDLL:
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    return lib


def syscall_groups() -> dict[str, list[str]]:
    """systemd's named groups (``@system-service`` ...) as ``systemd-analyze syscall-filter`` lists them."""
    listing = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True,
                             text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(name: str, groups: dict[str, list[str]]) -> set[str]:
    """The system calls ``name`` stands for (a group, recursively, or one call)."""
    if not name.startswith("@"):
        return {name}
    return set().union(*(expand(member, groups) for member in groups[name]))


def _load_mdwe(lib: ctypes.CDLL) -> None:
    ctx = lib.seccomp_init(_ALLOW)
    for name, mask in (("mmap", _PROT_WRITE | _PROT_EXEC), ("mprotect", _PROT_EXEC),
                       ("pkey_mprotect", _PROT_EXEC), ("shmat", _SHM_EXEC)):
        number = lib.seccomp_syscall_resolve_name(name.encode())
        compare = (_ArgCmp * 1)(_ArgCmp(2, _MASKED_EQ, mask, mask))  # the prot / shmflg argument
        assert lib.seccomp_rule_add_array(ctx, _errno(_EPERM), number, 1, compare) == 0, name
    assert lib.seccomp_load(ctx) == 0, os.strerror(ctypes.get_errno())
    lib.seccomp_release(ctx)


def _load_allow_list(lib: ctypes.CDLL, allowed: set[str]) -> None:
    ctx = lib.seccomp_init(_errno(_EPERM))
    for name in sorted(allowed):
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number >= 0:  # a name this architecture does not have
            assert lib.seccomp_rule_add_array(ctx, _ALLOW, number, 0, None) == 0, name
    # last: seccomp() itself is not in the allow list, so no filter can be loaded after this one
    assert lib.seccomp_load(ctx) == 0, os.strerror(ctypes.get_errno())
    lib.seccomp_release(ctx)


def main(argv: list[str]) -> None:
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    groups = syscall_groups()
    allowed = expand("@system-service", groups) - expand("@privileged", groups) - expand("@resources", groups)
    lib = _libseccomp()
    if "--mdwe" in options:
        _load_mdwe(lib)
    _load_allow_list(lib, allowed)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])

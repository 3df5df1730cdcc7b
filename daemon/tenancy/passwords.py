"""argon2id off the loop, on a pool of its own: a login flood waits here and nowhere else.

Each hash costs ~0.1 s of a core and 64 MiB (secrets.py).  On the loop's default pool a
flood of logins would take every thread that ledger reads and other helpers share, and
on the inference pool the modules' work; so it runs on ``threads`` threads of its own,
with at most ``queue`` more logins waiting.  Past that a login is refused at once
(503 UNAVAILABLE, Retry-After), so neither the memory nor the wait grows with the flood.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from daemon.core.errors import Unavailable
from daemon.core.i18n import t
from daemon.tenancy.secrets import hash_password, verify_password

T = TypeVar("T")

BUSY_RETRY_AFTER_S = 1.0


class PasswordPool:
    """``threads`` argon2id threads and room for ``queue`` waiting jobs; ``close`` when done."""

    def __init__(self, threads: int = 1, queue: int = 8) -> None:
        if threads < 1 or queue < 0:
            raise ValueError("a password pool needs at least one thread and a queue of 0 or more")
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2id")
        self._capacity = threads + queue
        self._pending = 0  # running + waiting, counted on the loop

    @property
    def pending(self) -> int:
        """Jobs running or waiting now."""
        return self._pending

    async def verify(self, stored: str, password: str) -> bool:
        """``secrets.verify_password`` on the pool; Unavailable when the pool is full."""
        return await self._run(verify_password, stored, password)

    async def hash(self, password: str) -> str:
        """``secrets.hash_password`` on the pool; Unavailable when the pool is full."""
        return await self._run(hash_password, password)

    async def _run(self, fn: Callable[[str, str], T] | Callable[[str], T], *args: str) -> T:
        if self._pending >= self._capacity:
            raise Unavailable(t("errors.passwords.too_many_logins_once"), {"reason": "login pool full"},
                              retry_after=BUSY_RETRY_AFTER_S)
        self._pending += 1
        try:
            # a cancelled caller cancels its job if it has not started; a started one ends soon
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)  # type: ignore[arg-type]
        finally:
            self._pending -= 1

    def close(self) -> None:
        """Stop the threads once the jobs already started are done; waiting ones are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)

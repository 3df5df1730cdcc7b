"""Ids that reach callers (trace ids, envelope ids) cannot be predicted from the stdlib's PRNG."""

from __future__ import annotations

import os
import random
import uuid

from daemon.core.envelope import new_trace_id, new_uuid


def test_ids_do_not_come_from_the_random_modules_stream() -> None:
    # MT19937's state is recoverable from its outputs; whoever sets or learns it must learn nothing
    random.seed(1234)
    first = [new_trace_id(), new_uuid()]
    random.seed(1234)
    again = [new_trace_id(), new_uuid()]
    assert first[0] != again[0] and first[1] != again[1]
    random.seed(1234)
    state = random.getstate()
    new_trace_id()
    new_uuid()
    assert random.getstate() == state  # they do not even draw from it


def test_ids_are_well_formed_and_distinct() -> None:
    traces = {new_trace_id() for _ in range(10_000)}
    assert len(traces) == 10_000 and all(len(t) == 32 and int(t, 16) >= 0 for t in traces)
    parsed = uuid.UUID(new_uuid())
    assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running pytest's teardown
        os.close(read)
        os.write(write, (new_trace_id() + new_trace_id()).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = new_trace_id() + new_trace_id()
    assert len(child) == 64 and child != parent


def test_ids_drawn_from_many_threads_at_once_are_all_distinct() -> None:
    # four ids share one hash: threads racing for a block must still never share an id
    import threading

    drawn: list[list[str]] = [[] for _ in range(4)]

    def draw(out: list[str]) -> None:
        out.extend(new_trace_id() if n % 2 else new_uuid().replace("-", "") for n in range(20_000))

    threads = [threading.Thread(target=draw, args=(out,)) for out in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [i for out in drawn for i in out]
    assert len(set(ids)) == len(ids) == 80_000

"""Event ids: random version 4 UUIDs, unique, and never shared with a forked child."""

from __future__ import annotations

import os
import uuid

from channels.store.rules import _RandomIds, new_event_id


def test_ids_are_version_4_uuids_in_canonical_form_and_unique() -> None:
    ids = [new_event_id() for _ in range(3 * _RandomIds.BLOCK // 16 + 7)]  # across several blocks
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    new_event_id()  # the parent has a block read ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, ",".join(new_event_id() for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split(",")
    os.waitpid(pid, 0)
    parent = [new_event_id() for _ in range(8)]
    assert len(child) == 8 and not set(child) & set(parent)

"""Each test's sessions wait in a hub of their own, as each server's sessions do.

Why: the session tests run the session on the test's own (main) thread, so without
this every test shares that thread's gevent hub. After a test whose session timed
out waiting, and a fresh Hypothesis run, a later wait in that shared hub was seen to
keep the GIL for its whole timeout, so the test's peer thread could not answer
(reproduced with a fresh .hypothesis folder and `-k "silent or leaks or larger"`).
A server's hub lives in its own thread and ends with it, so it never carries one
test's state into the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest


@pytest.fixture(autouse=True)
def fresh_hub() -> Iterator[None]:
    yield
    gevent.get_hub().destroy(destroy_loop=True)

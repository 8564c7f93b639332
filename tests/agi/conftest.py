"""Each test's sessions wait in a hub of their own, as each server's sessions do.

Why: the session tests run the session on the test's own (main) thread, so without
this every test shares that thread's gevent hub. A hub that has run once in the
main thread, then a Hypothesis test with an empty example database, then a wait on
that hub: other threads do not run for the wait's whole length, so a test's peer
thread cannot answer. That needs none of our code (gevent's `hub.wait()` on a timer
shows it; the same wait with a warm database does not). A server's hub lives in its
own thread and ends with it, as each test's hub now does.
"""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest


@pytest.fixture(autouse=True)
def fresh_hub() -> Iterator[None]:
    yield
    gevent.get_hub().destroy(destroy_loop=True)

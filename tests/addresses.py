"""Test clients that come from an address of their own, so that the login throttle (which counts
failures per client address, in the shared test database) never mixes up two tests."""

from __future__ import annotations

import itertools
import os
import random

from flask import Flask
from flask.testing import FlaskClient

# 10.x.y.z from a per-process random start: two pytest processes on one database do not collide.
_addresses = itertools.count(random.Random(os.getpid()).randrange(1, 2**23) * 2)


def fresh_address() -> str:
    n = next(_addresses) % (2**24 - 2) + 1
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def client_from_new_address(app: Flask) -> FlaskClient:
    """A test client of ``app`` whose requests come from a fresh address (whatever
    ``app.test_client_class`` is)."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = fresh_address()
    return client


class FreshAddressClient(FlaskClient):
    """A Flask test client whose requests come from an address of its own (see ``tests/conftest.py``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.environ_base["REMOTE_ADDR"] = fresh_address()

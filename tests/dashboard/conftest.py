"""Fixtures of the dashboard tests: the app on the session's PostgreSQL database, users, logins."""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from engine.settings import Settings
from web import create_app

PASSWORD = "correct horse battery"
SECRET_VALUE = "hunter2-very-secret"
HOSTILE = '<script>window.pwned=1</script><img src=x hx-post="/runs/x/cancel" hx-trigger="load">'

ECHO = """flow 1

workflow {name}(who: string, times: int = 1, tags: list<string> = [], loud: bool = false) {{
  doc "Echoes its params."
  step echo: transform {{ input: [params.who], map: "Hello ${{item}}" }}
  step count: transform {{ after echo  input: [params.times], map: item * 2 }}
  output {{ greeting: steps.echo.output[0], n: steps.count.output[0] }}
}}
"""


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def database(postgres_url: str) -> str:
    from engine.store import db

    db.upgrade(postgres_url)
    return postgres_url


def make_app(database_url: str, **settings: Any) -> Flask:
    values: dict[str, Any] = {"secrets": {"API_KEY": SECRET_VALUE}, "secret_key": "test-secret-key"}
    values.update(settings)
    return create_app({"TESTING": True}, settings=Settings(database_url=database_url, broker_url="memory://", **values))


@pytest.fixture
def app(database: str) -> Iterator[Flask]:
    app = make_app(database)
    yield app
    app.extensions["flow"].db.dispose()


def create_user(app: Flask, role: str = "operator") -> str:
    username = unique(role)
    app.extensions["flow"].store.create_user(username, PASSWORD, role)
    return username


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert found, "no csrf-token meta tag"
    return found.group(1)


def log_in(client: FlaskClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the form; the session's CSRF token."""
    token = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    assert response.status_code == 303, response.get_data(as_text=True)
    return csrf_of(client.get("/").get_data(as_text=True))


class LoggedIn:
    """A test client logged in as an operator, with the CSRF token to send."""

    def __init__(self, app: Flask, role: str = "operator") -> None:
        self.app = app
        self.client = app.test_client()
        self.username = create_user(app, role)
        self.token = log_in(self.client, self.username)

    @property
    def store(self) -> Any:
        return self.app.extensions["flow"].store

    def get(self, path: str, htmx: bool = False) -> Any:
        return self.client.get(path, headers={"HX-Request": "true"} if htmx else {})

    def post(self, path: str, data: dict[str, Any] | None = None, htmx: bool = True, token: bool = True) -> Any:
        headers = {"HX-Request": "true"} if htmx else {}
        if token and htmx:
            headers["X-CSRF-Token"] = self.token
        form = dict(data or {})
        if token and not htmx:
            form["csrf_token"] = self.token
        return self.client.post(path, data=form, headers=headers)

    def deploy_echo(self) -> str:
        name = unique("echo")
        self.store.deploy(ECHO.format(name=name), "echo.flow")
        return name


@pytest.fixture
def operator(app: Flask) -> LoggedIn:
    return LoggedIn(app)


class HtmxRegions(HTMLParser):
    """Records, for each text that contains ``marker``, whether an ancestor element has ``hx-disable``."""

    VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())

    def __init__(self, marker: str) -> None:
        super().__init__(convert_charrefs=True)
        self.marker = marker
        self.stack: list[tuple[str, bool]] = []
        self.found: list[bool] = []
        self.attributes: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes.extend((tag, k, v) for k, v in attrs)
        if tag not in self.VOID:
            self.stack.append((tag, any(k == "hx-disable" for k, _ in attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes.extend((tag, k, v) for k, v in attrs)

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index][0] == tag:
                del self.stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if self.marker in data:
            self.found.append(any(disabled for _, disabled in self.stack))


def hostile_text_is_inert(html: str, marker: str = "window.pwned") -> int:
    """Assert that every occurrence of the hostile text is escaped text inside an ``hx-disable``
    region, and that no element got a hostile attribute; the number of occurrences."""
    assert "<script>window.pwned" not in html
    assert 'hx-post="/runs/x/cancel"' not in html
    parser = HtmxRegions(marker)
    parser.feed(html)
    assert all(parser.found), "hostile text outside an hx-disable region"
    # the hostile markup may be the value of an attribute (an input's value), never markup
    assert not [a for a in parser.attributes if a[1].startswith("hx-") and "/runs/x/cancel" in (a[2] or "")]
    assert not [a for a in parser.attributes if a[0] == "img" and a[2] == "x"]
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert all("src=" in s for s in scripts), scripts
    return len(parser.found)

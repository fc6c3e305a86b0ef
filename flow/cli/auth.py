"""``flow token`` and ``flow user``: API tokens and dashboard users (``engine/store/auth.py``).

Registered on the ``flow`` group with ``register(main)``. Secrets only ever leave once: a new token is
printed when it is created and never again; passwords are read from a prompt (not echoed) or from
standard input, never from an option, which would leave them in the shell history.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import click

from engine.settings import Settings, SettingsError

ROLES = click.Choice(["viewer", "operator", "admin"])


@contextmanager
def _store() -> Iterator[Any]:
    """A ``Store`` on the configured database (the embedded one is migrated on the fly); engine
    errors become one-line messages."""
    from engine.core.errors import EngineError
    from engine.store import Store, db

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    engine = db.make_engine(settings.database_url)
    try:
        if settings.embedded:
            db.upgrade(engine)
        elif not db.is_up_to_date(engine):
            raise click.ClickException("the database is not at the newest schema; run `flow db upgrade` first")
        try:
            yield Store(engine, lease_seconds=settings.lease_seconds)
        except EngineError as exc:
            raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


# --- tokens ---------------------------------------------------------------------------------------


@click.group("token")
def token_group() -> None:
    """API tokens: sent as 'Authorization: Bearer <token>'; stored hashed.

    \b
    Roles: viewer (read), operator (also start, retry, cancel, compensate,
    requeue), admin (also deploy, schedules, tokens, users).
    """


@token_group.command("create")
@click.option("--name", required=True, help="What the token is for (e.g. the client's name).")
@click.option("--role", type=ROLES, default="viewer", show_default=True, help="What the token may do.")
@click.option("--json", "as_json", is_flag=True, help="Print {id, name, role, token} as JSON.")
def token_create(name: str, role: str, as_json: bool) -> None:
    """Create a token and print it, once: Flow keeps only its hash."""
    with _store() as store:
        token_id, token = store.create_token(name, role)
    if as_json:
        _echo_json({"id": token_id, "name": name, "role": role, "token": token})
        return
    click.echo(f"token {token_id} ({name}, {role}) created; copy it now, it is not shown again:", err=True)
    click.echo(token)


@token_group.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke the token TOKEN_ID (see `flow token list`): it is refused from the next request on."""
    with _store() as store:
        store.revoke_token(token_id)
    click.echo(f"token {token_id} revoked", err=True)


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the tokens as a JSON list.")
def token_list(as_json: bool) -> None:
    """List tokens: id, name, role, the first characters of the token, use and revocation times."""
    with _store() as store:
        tokens = store.list_tokens()
    if as_json:
        _echo_json(tokens)
        return
    for t in tokens:
        state = f"revoked {t['revoked_at']}" if t["revoked_at"] else f"last used {t['last_used_at'] or 'never'}"
        click.echo(f"{t['id']}  {t['role']:<8}  {t['prefix']}…  {t['name']}  ({state})")
    if not tokens:
        click.echo("no tokens; create one with `flow token create --name NAME --role ROLE`", err=True)


# --- users ----------------------------------------------------------------------------------------


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin: standard input had no password line")
        return password
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


PASSWORD_STDIN = click.option("--password-stdin", "password_stdin", is_flag=True,
                              help="Read the password from the first line of standard input instead of a prompt.")


@click.group("user")
def user_group() -> None:
    """Dashboard users: username, password (stored with scrypt) and role."""


@user_group.command("create")
@click.argument("username")
@click.option("--role", type=ROLES, default="viewer", show_default=True, help="What the user may do.")
@PASSWORD_STDIN
def user_create(username: str, role: str, password_stdin: bool) -> None:
    """Create the dashboard user USERNAME (the password is asked twice)."""
    password = _read_password(password_stdin)
    with _store() as store:
        user = store.create_user(username, password, role)
    click.echo(f"user {user.username} ({user.role}) created", err=True)


@user_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the users as a JSON list.")
def user_list(as_json: bool) -> None:
    """List users with their role and whether they are disabled."""
    with _store() as store:
        users = store.list_users()
    if as_json:
        _echo_json([asdict(u) for u in users])
        return
    for u in users:
        click.echo(f"{u.username:<20}  {u.role:<8}  {'disabled' if u.disabled else 'active'}")


@user_group.command("disable")
@click.argument("username")
def user_disable(username: str) -> None:
    """Disable USERNAME: their password no longer logs in."""
    with _store() as store:
        store.disable_user(username)
    click.echo(f"user {username} disabled", err=True)


@user_group.command("passwd")
@click.argument("username")
@PASSWORD_STDIN
def user_passwd(username: str, password_stdin: bool) -> None:
    """Set a new password for USERNAME."""
    password = _read_password(password_stdin)
    with _store() as store:
        store.set_password(username, password)
    click.echo(f"user {username}: password changed", err=True)


def register(group: click.Group) -> None:
    """Add ``token`` and ``user`` to the ``flow`` group."""
    group.add_command(token_group)
    group.add_command(user_group)

"""``flow token`` and ``flow user``: API tokens and dashboard users (``engine/store/auth.py``).

Registered on the ``flow`` group with ``register(main)``. Secrets only ever leave once: a new token is
printed when it is created and never again; passwords are read from a prompt (not echoed) or from
standard input, never from an option, which would leave them in the shell history.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
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


def _audit(store: Any, action: str, target: str, detail: str | None = None) -> None:
    """An audit row for a change made here: the actor is ``cli:<OS user>``, the address ``local``."""
    from engine.store.audit import AuditRecord

    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        who = "unknown"
    store.access.record(AuditRecord(actor=f"cli:{who}", via="cli", action=action, outcome="ok", target=target,
                                    client_address="local", detail=detail))


def _session_policy() -> Any:
    from engine.store.sessions import SessionPolicy

    settings = Settings.from_env()
    return SessionPolicy(idle=timedelta(seconds=settings.session_idle_seconds),
                         lifetime=timedelta(seconds=settings.session_lifetime_seconds))


def _lifetime(_ctx: click.Context, _param: click.Parameter, value: str | None) -> timedelta | None:
    from engine.core.durations import parse_duration

    if value is None:
        return None
    try:
        return timedelta(seconds=parse_duration(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


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
@click.option("--expires", "expires_in", callback=_lifetime, metavar="DURATION",
              help="Refuse the token this long after now (90m, 12h, 30d, 2w); default: until revoked.")
@click.option("--json", "as_json", is_flag=True, help="Print {id, name, role, expires_at, token} as JSON.")
def token_create(name: str, role: str, expires_in: timedelta | None, as_json: bool) -> None:
    """Create a token and print it, once: Flow keeps only its hash."""
    with _store() as store:
        token_id, token = store.create_token(name, role, expires_in)
        expires_at = next(t["expires_at"] for t in store.list_tokens() if t["id"] == token_id)
        _audit(store, "token.create", f"token {token_id}", f"{name} ({role}), expires {expires_at or 'never'}")
    if as_json:
        _echo_json({"id": token_id, "name": name, "role": role, "expires_at": expires_at, "token": token})
        return
    until = f", expires {expires_at}" if expires_at else ""
    click.echo(f"token {token_id} ({name}, {role}{until}) created; copy it now, it is not shown again:", err=True)
    click.echo(token)


@token_group.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke the token TOKEN_ID (see `flow token list`): it is refused from the next request on."""
    with _store() as store:
        store.revoke_token(token_id)
        _audit(store, "token.revoke", f"token {token_id}")
    click.echo(f"token {token_id} revoked", err=True)


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the tokens as a JSON list.")
def token_list(as_json: bool) -> None:
    """List tokens: id, name, role, the first characters of the token, last use, expiry, revocation."""
    with _store() as store:
        tokens = store.list_tokens()
    if as_json:
        _echo_json(tokens)
        return
    for t in tokens:
        state = [f"last used {t['last_used_at'] or 'never'}"]
        if t["expires_at"]:
            state.append(f"expires {t['expires_at']}")
        if t["revoked_at"]:
            state.append(f"revoked {t['revoked_at']}")
        click.echo(f"{t['id']}  {t['role']:<8}  {t['prefix']}…  {t['name']}  ({', '.join(state)})")
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
    """Dashboard users: username, password (stored with scrypt), role and sessions.

    \b
    Disabling a user, changing their role or password, or removing them
    ends their open dashboard sessions at once.
    """


@user_group.command("create")
@click.argument("username")
@click.option("--role", type=ROLES, default="viewer", show_default=True, help="What the user may do.")
@PASSWORD_STDIN
def user_create(username: str, role: str, password_stdin: bool) -> None:
    """Create the dashboard user USERNAME (the password is asked twice)."""
    password = _read_password(password_stdin)
    with _store() as store:
        user = store.create_user(username, password, role)
        _audit(store, "user.create", f"user {user.username}", f"role {user.role}")
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
    """Disable USERNAME: their password no longer logs in, and their open sessions end."""
    with _store() as store:
        store.disable_user(username)
        _audit(store, "user.disable", f"user {username}")
    click.echo(f"user {username} disabled; their sessions are ended", err=True)


@user_group.command("enable")
@click.argument("username")
def user_enable(username: str) -> None:
    """Let the disabled user USERNAME log in again."""
    with _store() as store:
        store.enable_user(username)
        _audit(store, "user.enable", f"user {username}")
    click.echo(f"user {username} enabled", err=True)


@user_group.command("role")
@click.argument("username")
@click.argument("role", type=ROLES)
def user_role(username: str, role: str) -> None:
    """Give USERNAME the role ROLE; their open sessions end (they log in again with it)."""
    with _store() as store:
        store.set_role(username, role)
        _audit(store, "user.role", f"user {username}", f"role {role}")
    click.echo(f"user {username} is now {role}; their sessions are ended", err=True)


@user_group.command("delete")
@click.argument("username")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def user_delete(username: str, yes: bool) -> None:
    """Remove USERNAME and end their sessions (the audit trail keeps their name)."""
    if not yes:
        click.confirm(f"Remove the user {username}?", abort=True)
    with _store() as store:
        store.delete_user(username)
        _audit(store, "user.delete", f"user {username}")
    click.echo(f"user {username} removed", err=True)


@user_group.command("sessions")
@click.argument("username")
@click.option("--all", "include_ended", is_flag=True, help="Also the sessions that have ended, and why.")
@click.option("--json", "as_json", is_flag=True, help="Print the sessions as a JSON list.")
def user_sessions(username: str, include_ended: bool, as_json: bool) -> None:
    """List USERNAME's dashboard sessions: started, last seen, from where (newest first)."""
    with _store() as store:
        listed = store.access.list_sessions(username, _session_policy(), include_ended)
    if as_json:
        _echo_json(listed)
        return
    for s in listed:
        state = "active" if s["active"] else f"ended: {s['ended_because']}"
        click.echo(f"{s['id']}  {s['role']:<8}  started {s['created_at']}  last seen {s['last_seen_at']}  "
                   f"from {s['client_address'] or '?'}  ({state})")
    if not listed:
        click.echo(f"{username} has no {'' if include_ended else 'open '}sessions", err=True)


@user_group.command("logout")
@click.argument("username")
def user_logout(username: str) -> None:
    """End every open dashboard session of USERNAME: their next request goes to the login page."""
    with _store() as store:
        ended = store.access.end_user_sessions(username)
        _audit(store, "user.logout", f"user {username}", f"{ended} sessions ended")
    click.echo(f"user {username}: {ended} session{'s' if ended != 1 else ''} ended", err=True)


@user_group.command("passwd")
@click.argument("username")
@PASSWORD_STDIN
def user_passwd(username: str, password_stdin: bool) -> None:
    """Set a new password for USERNAME."""
    password = _read_password(password_stdin)
    with _store() as store:
        store.set_password(username, password)
        _audit(store, "user.passwd", f"user {username}")
    click.echo(f"user {username}: password changed; their sessions are ended", err=True)


def register(group: click.Group) -> None:
    """Add ``token`` and ``user`` to the ``flow`` group."""
    group.add_command(token_group)
    group.add_command(user_group)

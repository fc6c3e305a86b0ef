"""Workflow versions: deploy compiled specs, find a version, and cache specs by version id."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

import dsl
from dsl.errors import ERROR, Diagnostic
from dsl.task_definitions import TaskDefinitionError, compile_task_definition
from dsl.spec import Span, WorkflowSpec
from engine.core.errors import CompileFailed, NotFound
from engine.store.context import DeployedVersion, StoreContext, new_id, versions

# Concurrent deploys of the same name race for the next version number; the loser retries.
DEPLOY_ATTEMPTS = 5


def deploy(ctx: StoreContext, source: str, filename: str,
           step_types: Mapping[str, Any] | None = None) -> list[DeployedVersion]:
    """Compile ``source`` and store a new version of each workflow whose source changed.

    ``step_types``: the dotted step types to check the config of dotted steps against (a manifest of
    Python step types, plus the installed plugins'); default the installed plugins'.
    """
    result = dsl.compile_source(source, filename, step_types)
    if not result.ok:
        raise CompileFailed(result.diagnostics, filename)
    return save_specs(ctx, result.specs, source, filename)


def deploy_seed(ctx: StoreContext, definition: Mapping[str, Any]) -> DeployedVersion:
    """Store the task API's JSON definition (``{"name", "definition": {...}}``) as a workflow version.

    Its source is the definition as canonical JSON, so re-deploying the same definition is a no-op.
    """
    try:
        spec = compile_task_definition(definition)
    except TaskDefinitionError as exc:
        span = Span("<seed definition>", 1, 1, 1, 1)
        raise CompileFailed([Diagnostic(ERROR, "seed", str(exc), span)], "seed definition") from None
    source = json.dumps(definition, sort_keys=True, indent=2)
    return save_specs(ctx, [spec], source, None)[0]


def save_specs(
    ctx: StoreContext, specs: Sequence[WorkflowSpec], source: str, filename: str | None
) -> list[DeployedVersion]:
    """Store ``specs`` compiled from ``source``: a new version for each name whose source is new.

    The hash covers the whole file, so that a version's stored source is exactly what it was
    compiled from (a file of two workflows gives both a new version when either changes).
    """
    source_hash = hashlib.sha256(source.encode("utf-8")).hexdigest()
    deployed: list[DeployedVersion] = []
    for spec in specs:
        deployed.append(_save_one(ctx, spec, source, source_hash, filename))
    return deployed


def _save_one(
    ctx: StoreContext, spec: WorkflowSpec, source: str, source_hash: str, filename: str | None
) -> DeployedVersion:
    for _ in range(DEPLOY_ATTEMPTS):
        try:
            with ctx.engine.begin() as conn:
                existing = conn.execute(
                    select(versions.c.version).where(
                        versions.c.name == spec.name, versions.c.source_hash == source_hash
                    )
                ).scalar()
                if existing is not None:
                    return DeployedVersion(spec.name, int(existing), False)
                latest = conn.execute(
                    select(func.max(versions.c.version)).where(versions.c.name == spec.name)
                ).scalar()
                number = int(latest or 0) + 1
                conn.execute(
                    versions.insert().values(
                        id=new_id(),
                        name=spec.name,
                        version=number,
                        source=source,
                        filename=filename,
                        source_hash=source_hash,
                        spec=spec.to_json(),
                        created_at=ctx.now(),
                    )
                )
                return DeployedVersion(spec.name, number, True)
        except IntegrityError:
            continue  # another deploy took this number (or stored this very source): look again
    raise RuntimeError(f"could not store a version of {spec.name!r}: too many concurrent deploys")


def find_version(conn: Connection, name: str, version: int | None = None) -> dict[str, Any]:
    """The row of ``name`` at ``version`` (default: the newest)."""
    statement = select(versions).where(versions.c.name == name)
    if version is None:
        statement = statement.order_by(versions.c.version.desc()).limit(1)
    else:
        statement = statement.where(versions.c.version == version)
    row = conn.execute(statement).mappings().first()
    if row is None:
        label = name if version is None else f"{name} v{version}"
        raise NotFound("workflow", label, "deploy it first (flow deploy FILE)")
    return dict(row)


def spec_of(ctx: StoreContext, conn: Connection, version_id: str) -> WorkflowSpec:
    """The compiled spec of a version, from the cache or the database."""
    spec = ctx.specs.get(version_id)
    if spec is None:
        data = conn.execute(
            select(versions.c.spec).where(versions.c.id == version_id)
        ).scalar_one()
        spec = WorkflowSpec.from_json(data)
        ctx.specs[version_id] = spec
    return spec


def load_specs(ctx: StoreContext, conn: Connection, version_ids: Sequence[str]) -> None:
    """Fill the cache for ``version_ids`` in one query (a batch touches runs of many versions)."""
    missing = sorted({v for v in version_ids if v not in ctx.specs})
    if not missing:
        return
    rows = conn.execute(select(versions.c.id, versions.c.spec).where(versions.c.id.in_(missing)))
    for version_id, data in rows:
        ctx.specs[version_id] = WorkflowSpec.from_json(data)

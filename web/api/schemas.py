"""JSON Schemas of the API's bodies and answers (2020-12, the dialect of OpenAPI 3.1).

Request schemas validate the bodies (``web.api.validation``); every schema here is also published
under ``components.schemas`` of ``/api/openapi.json``. Answer schemas leave ``additionalProperties``
open so the engine can add fields without breaking clients.
"""

from __future__ import annotations

from typing import Any

from engine.core.states import RunStatus, TaskStatus

Schema = dict[str, Any]

TASK_TYPES = ("http_request", "data_processing", "compensation")


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


ID = {"type": "string", "minLength": 1, "maxLength": 200}
TIMESTAMP = {"type": ["string", "number", "null"], "description": "ISO 8601 time (or epoch seconds)"}
TASK_TYPE = {"type": "string", "enum": list(TASK_TYPES), "description": "The worker queue that runs the task."}
PAYLOAD = {"type": "object", "description": "The task's input; secrets show as their expression, never their value."}
MAX_ATTEMPTS = {"type": "integer", "minimum": 1, "maximum": 100, "default": 3}

# --- requests -------------------------------------------------------------------------------

CREATE_TASK: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": TASK_TYPE,
        "payload": PAYLOAD,
        "max_attempts": MAX_ATTEMPTS,
        "maxRetries": {"type": "integer", "minimum": 0, "maximum": 99,
                       "description": "The task API's spelling: retries after the first attempt."},
    },
    "additionalProperties": False,
    "examples": [{"type": "http_request", "payload": {"method": "POST", "url": "https://api.example.com/webhook"}}],
}

COMPENSATE_TASK: Schema = {
    "type": "object",
    "properties": {
        "action": {
            "type": "object",
            "required": ["task_type"],
            "properties": {"task_type": TASK_TYPE, "config": {"type": "object"}, "type": {"type": "string"}},
            "description": "For a standalone task: the undo action to run (a run's task uses its step's).",
        },
    },
    "additionalProperties": False,
}

SCHEDULED_TASK: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": TASK_TYPE,
        "payload": PAYLOAD,
        "max_attempts": MAX_ATTEMPTS,
        "scheduledAt": {"type": "string", "format": "date-time", "description": "When to run (ISO 8601, with offset)."},
        "run_at": {"type": "string", "format": "date-time", "description": "Alias of scheduledAt."},
    },
    "oneOf": [{"required": ["scheduledAt"]}, {"required": ["run_at"]}],
    "additionalProperties": False,
}

RECURRING_TASK: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": TASK_TYPE,
        "payload": PAYLOAD,
        "cronExpression": {"type": "string", "minLength": 1, "description": "Five-field cron: m h dom mon dow."},
        "cron": {"type": "string", "minLength": 1, "description": "Alias of cronExpression."},
        "timezone": {"type": "string", "minLength": 1, "default": "UTC"},
    },
    "oneOf": [{"required": ["cronExpression"]}, {"required": ["cron"]}],
    "additionalProperties": False,
}

SOURCE: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256 * 1024,
    "description": "`.flow` source text (at most 256 KiB).",
}
FILENAME: Schema = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^/\\\\]+$"}

STEP_TYPES: Schema = {
    "type": "object",
    "description": "Python step types to check dotted steps against: `{\"ns.name\": {\"task_type\", "
                   "\"config_schema\"}}`, as `flow steps export` writes them.",
    "additionalProperties": {
        "type": "object",
        "properties": {"task_type": {"type": "string", "minLength": 1}, "config_schema": {"type": "object"},
                       "description": {"type": "string"}},
    },
}

# The branches name their fields; ``web.api.validation.unknown_fields`` refuses any other (a
# top-level ``additionalProperties: false`` would refuse the fields of the other branch).
DEPLOY_WORKFLOW: Schema = {
    "type": "object",
    "oneOf": [
        {"required": ["source"], "properties": {"source": SOURCE, "filename": FILENAME, "step_types": STEP_TYPES}},
        {
            "required": ["name", "definition"],
            "not": {"required": ["source"]},
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "definition": {"type": "object", "description": "The task API's {initialTask, transitions}."},
            },
        },
    ],
}

CHECK_WORKFLOW: Schema = {
    "type": "object",
    "required": ["source"],
    "properties": {"source": SOURCE, "filename": FILENAME, "step_types": STEP_TYPES},
    "additionalProperties": False,
}

START_RUN: Schema = {
    "type": "object",
    "properties": {
        "params": {"type": "object", "description": "Values of the workflow's typed params."},
        "version": {"type": "integer", "minimum": 1, "description": "A version to pin; default the latest."},
    },
    "additionalProperties": False,
}

START_RUNS: Schema = {
    "type": "object",
    "required": ["runs"],
    "properties": {
        "runs": {
            "type": "array", "minItems": 1, "maxItems": 1000,
            "items": {
                "type": "object",
                "properties": {
                    "params": {"type": "object", "description": "Values of the workflow's typed params."},
                    "idempotency_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 255,
                                        "description": "Like the Idempotency-Key header of a single start."},
                },
                "additionalProperties": False,
            },
        },
        "version": {"type": "integer", "minimum": 1, "description": "A version to pin; default the latest."},
    },
}

STARTED_RUNS: Schema = {
    "type": "object",
    "required": ["runs"],
    "properties": {
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index"],
                "properties": {
                    "index": {"type": "integer", "minimum": 0, "description": "The entry's position in the request."},
                    "run": ref("Run"),
                    "error": {"type": "object", "required": ["code", "message"],
                              "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                             "details": {}}},
                },
            },
        },
    },
}

APPROVE: Schema = {
    "type": "object",
    "required": ["approved"],
    "properties": {
        "approved": {"type": "boolean", "description": "true approves, false rejects (the step completes either way)."},
        "comment": {"type": ["string", "null"], "maxLength": 10000},
        "item": {"type": ["integer", "null"], "minimum": 0,
                 "description": "Answer one item of a fan-out approval; default every waiting item."},
    },
    "additionalProperties": False,
}

LIST_RUNS_QUERY: Schema = {
    "type": "object",
    "properties": {
        "workflow": {"type": "string", "minLength": 1},
        "status": {"type": "string", "enum": [s.value for s in RunStatus]},
        "since": {"type": "string", "format": "date-time", "description": "Runs created at or after (ISO 8601)."},
        "until": {"type": "string", "format": "date-time", "description": "Runs created before (ISO 8601)."},
        "limit": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
        "cursor": {"type": "string", "minLength": 1, "description": "`next_cursor` of the previous page."},
    },
    "patternProperties": {
        r"^search\.": {
            "type": "string", "maxLength": 255, "x-flow-name": "search.{key}",
            "description": "Runs whose business key KEY (the workflow's `search { KEY: ... }` clause) has "
                           "this value, compared as text: `?search.order=4711`. Several keys combine with "
                           "AND (at most 8).",
        },
    },
}

GET_RUN_QUERY: Schema = {
    "type": "object",
    "properties": {
        "wait": {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m)?\s*$",
                 "description": "Hold the request until the run is terminal or this much time passed "
                                "(`30s`, `500ms`, `1m`, or seconds; at most 60 s). 503 `too_many_waiters` "
                                "when the server already holds as many waiting requests as it allows."},
    },
}

GRAPH_QUERY: Schema = {
    "type": "object",
    "properties": {"version": {"type": "integer", "minimum": 1}},
}

# --- answers --------------------------------------------------------------------------------

ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
        }
    },
}

TASK: Schema = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": ID,
        "type": {"type": "string"},
        "task_type": {"type": "string"},
        "status": {"type": "string", "enum": [s.value for s in TaskStatus]},
        "payload": {},
        "attempt": {"type": "integer"},
        "max_attempts": {"type": "integer"},
        "run_id": {"type": ["string", "null"]},
        "created_at": TIMESTAMP,
    },
}

RUN: Schema = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": ID,
        "workflow": {},
        "status": {"type": "string", "enum": [s.value for s in RunStatus]},
        "params": {},
        "search": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "The run's business keys (the workflow's `search` clause), as text."},
        "backfill_id": {"type": ["string", "null"], "description": "The backfill that started the run, if any."},
        "scheduled_at": {"type": ["string", "null"], "description": "The fire time that started the run, if any."},
        "steps": {},
        "created_at": TIMESTAMP,
    },
}

RUN_PAGE: Schema = {
    "type": "object",
    "required": ["runs", "next_cursor"],
    "properties": {"runs": {"type": "array", "items": ref("Run")}, "next_cursor": {"type": ["string", "null"]}},
}

DIAGNOSTIC: Schema = {
    "type": "object",
    "required": ["severity", "message"],
    "properties": {
        "severity": {"type": "string"},
        "code": {"type": ["string", "null"]},
        "message": {"type": "string"},
        "span": {
            "type": ["object", "null"],
            "properties": {k: {"type": ["integer", "string", "null"]}
                           for k in ("file", "line", "column", "end_line", "end_column")},
        },
    },
}

CHECK_RESULT: Schema = {
    "type": "object",
    "required": ["ok", "diagnostics"],
    "properties": {
        "ok": {"type": "boolean"},
        "diagnostics": {"type": "array", "items": ref("Diagnostic")},
        "workflows": {"type": "array", "items": {"type": "string"}},
    },
}

VERSION: Schema = {
    "type": "object",
    "required": ["name", "version"],
    "properties": {"name": {"type": "string"}, "version": {"type": "integer"}, "created": {}, "created_at": {}},
}

DEPLOYED: Schema = {
    "type": "object",
    "required": ["versions"],
    "properties": {
        "versions": {"type": "array", "items": ref("Version")},
        "warnings": {"type": "array", "description": "W510: a dotted step type that no worker serves.",
                     "items": {"type": "object", "required": ["code", "message"],
                               "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                              "step_type": {"type": "string"}, "task_type": {"type": "string"},
                                              "workflows": {"type": "array", "items": {"type": "string"}}}}},
    },
}

WORKFLOW_LIST: Schema = {
    "type": "object",
    "required": ["workflows"],
    "properties": {"workflows": {"type": "array", "items": {"type": "object"}}},
}

LOGS: Schema = {
    "type": "object",
    "required": ["logs"],
    "properties": {"logs": {"type": "array", "items": {"type": "object"}}},
}

DEAD_LETTER: Schema = {"type": "object", "required": ["id"], "properties": {"id": {}, "task_id": {}, "reason": {}}}

DEAD_LETTER_LIST: Schema = {
    "type": "object",
    "required": ["dead_letters"],
    "properties": {"dead_letters": {"type": "array", "items": ref("DeadLetter")}},
}

COUNT: Schema = {
    "type": "object",
    "required": ["count"],
    "properties": {"status": {"type": "string"}, "count": {"type": "integer", "minimum": 0}},
}

OVERLOAD: Schema = {
    "type": "object",
    "required": ["overloaded", "reasons"],
    "properties": {
        "overloaded": {"type": "boolean"},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "backlog": {"type": "integer"},
        "failed_ratio": {"type": ["number", "null"]},
        "thresholds": {"type": "object"},
    },
}

QUEUE_STATUS: Schema = {
    "type": "object",
    "required": ["counts", "overloaded"],
    "properties": {"counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                   "overloaded": {"type": "boolean"}},
}

HEALTH: Schema = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "down"]},
        "checks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "string", "enum": ["up", "down"]},
                               "latency_ms": {"type": ["number", "null"]}, "error": {"type": "string"}},
            },
        },
    },
}

SCHEDULE: Schema = {
    "type": "object",
    "required": ["id", "kind", "expression"],
    "properties": {
        "id": ID,
        "task": {"type": ["object", "null"]},
        "kind": {"type": "string", "enum": ["cron", "every", "at"]},
        "expression": {"type": "string", "description": "cron: the expression; every: seconds (`5400.0`); at: an ISO time"},
        "timing": {"type": "string", "description": "The timing as a .flow file writes it: `every 1h30m`, `cron 0 3 * * *`"},
        "timezone": {"type": "string"},
        "status": {"type": "string", "enum": ["active", "paused"]},
        "next_fire_at": {"type": ["string", "null"]},
        "upcoming": {"type": "array", "items": {"type": "string"}},
    },
}

BACKFILL: Schema = {
    "type": "object",
    "required": ["from", "to"],
    "properties": {
        "from": {"type": "string", "minLength": 1, "description": "First instant of the range, included (ISO 8601; no offset: UTC)."},
        "to": {"type": "string", "minLength": 1, "description": "End of the range, excluded; not after now."},
        "max_parallel": {"type": ["integer", "null"], "minimum": 1, "maximum": 10000,
                         "description": "At most this many of the backfill's runs in flight; the scheduler starts the rest as they finish. Default: all at once."},
        "dry_run": {"type": "boolean", "default": False, "description": "Only list the fire times: start nothing."},
    },
    "additionalProperties": False,
}

BACKFILL_RESULT: Schema = {
    "type": "object",
    "required": ["schedule_id", "backfill_id", "fire_times", "new", "already", "started", "queued", "dry_run"],
    "properties": {
        "schedule_id": ID,
        "backfill_id": {"type": ["string", "null"], "description": "Null for a dry run or when every fire time had fired already."},
        "from": TIMESTAMP, "to": TIMESTAMP,
        "dry_run": {"type": "boolean"},
        "max_parallel": {"type": ["integer", "null"]},
        "fire_times": {"type": "array", "items": {"type": "string"}, "description": "Every fire time of the range."},
        "new": {"type": "array", "items": {"type": "string"}, "description": "Fire times this backfill runs (or would run)."},
        "already": {"type": "array", "items": {"type": "string"}, "description": "Fire times recorded before: not run again."},
        "started": {"type": "array", "items": {"type": "object"}, "description": "Fires started now: fire_time, run_id or task_id, error."},
        "queued": {"type": "integer", "description": "New fires waiting for a slot under max_parallel."},
    },
}

BACKFILL_LIST: Schema = {
    "type": "object",
    "required": ["backfills"],
    "properties": {"backfills": {"type": "array", "items": {"type": "object"}}},
}

BACKFILL_CANCELLED: Schema = {
    "type": "object",
    "required": ["backfill_id", "dropped"],
    "properties": {"backfill_id": ID, "dropped": {"type": "integer", "description": "Queued fires dropped."}},
}

SCHEDULE_LIST: Schema = {
    "type": "object",
    "required": ["schedules"],
    "properties": {"schedules": {"type": "array", "items": ref("Schedule")}},
}

SCHEDULED_LIST: Schema = {
    "type": "object",
    "required": ["tasks"],
    "properties": {"tasks": {"type": "array", "items": ref("Schedule")}},
}

AUDIT_EVENT: Schema = {
    "type": "object",
    "required": ["id", "at", "actor", "via", "action", "outcome"],
    "properties": {
        "id": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"},
        "actor": {"type": "string", "description": "A user's or token's name; `admin` is FLOW_API_TOKEN."},
        "via": {"type": "string", "enum": ["api", "dashboard", "cli"]},
        "action": {"type": "string", "description": "e.g. run.cancel, workflow.deploy, login, user.disable"},
        "target": {"type": ["string", "null"], "description": "What it acted on, e.g. `run 3f2c…`."},
        "run_id": {"type": ["string", "null"]},
        "client_address": {"type": ["string", "null"]},
        "outcome": {"type": "string", "enum": ["ok", "refused", "failed"]},
        "status": {"type": ["integer", "null"], "description": "The HTTP status of the answer."},
        "detail": {"type": ["string", "null"], "description": "Why it failed or was refused."},
    },
}

AUDIT_PAGE: Schema = {
    "type": "object",
    "required": ["events", "next_cursor"],
    "properties": {"events": {"type": "array", "items": ref("AuditEvent")},
                   "next_cursor": {"type": ["integer", "null"]}},
}

COMPONENTS: dict[str, Schema] = {
    "Error": ERROR,
    "Task": TASK,
    "CreateTask": CREATE_TASK,
    "CompensateTask": COMPENSATE_TASK,
    "ScheduledTask": SCHEDULED_TASK,
    "RecurringTask": RECURRING_TASK,
    "DeployWorkflow": DEPLOY_WORKFLOW,
    "CheckWorkflow": CHECK_WORKFLOW,
    "CheckResult": CHECK_RESULT,
    "Diagnostic": DIAGNOSTIC,
    "Version": VERSION,
    "Deployed": DEPLOYED,
    "WorkflowList": WORKFLOW_LIST,
    "StartRun": START_RUN,
    "StartRuns": START_RUNS,
    "StartedRuns": STARTED_RUNS,
    "Approve": APPROVE,
    "Run": RUN,
    "RunPage": RUN_PAGE,
    "Logs": LOGS,
    "DeadLetter": DEAD_LETTER,
    "DeadLetterList": DEAD_LETTER_LIST,
    "Count": COUNT,
    "Overload": OVERLOAD,
    "QueueStatus": QUEUE_STATUS,
    "Health": HEALTH,
    "Schedule": SCHEDULE,
    "ScheduledList": SCHEDULED_LIST,
    "ScheduleList": SCHEDULE_LIST,
    "Backfill": BACKFILL,
    "BackfillResult": BACKFILL_RESULT,
    "BackfillList": BACKFILL_LIST,
    "BackfillCancelled": BACKFILL_CANCELLED,
    "AuditEvent": AUDIT_EVENT,
    "AuditPage": AUDIT_PAGE,
}

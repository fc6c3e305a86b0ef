"""A small SVG chart of the last hour (pure): tasks finished per minute, stacked completed/failed,
with the failure rate as a line. Every colour is a CSS class (the CSP forbids inline styles)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WIDTH, HEIGHT, PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 600, 150, 40, 40, 10, 22


def _nice_max(value: int) -> int:
    for step in (1, 2, 5):
        for power in range(0, 10):
            candidate: int = step * 10**power
            if candidate >= value:
                return candidate
    return value


def activity_svg(buckets: Sequence[dict[str, Any]]) -> str:
    """``buckets`` from ``engine.store.dashboard.activity``: one per minute, oldest first."""
    count = max(1, len(buckets))
    peak = _nice_max(max((b["completed"] + b["failed"] for b in buckets), default=0) or 1)
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / count
    bar = max(1.0, slot - 1.5)
    total_done = sum(b["completed"] for b in buckets)
    total_failed = sum(b["failed"] for b in buckets)
    finished = total_done + total_failed
    rate = f"{total_failed / finished:.1%}" if finished else "n/a"
    label = (f"Last hour: {finished} tasks finished ({finished / count:.1f} a minute), "
             f"{total_failed} failed, failure rate {rate}")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{label}">',
        f"<title>{label}</title>",
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP + plot_h}" x2="{PAD_LEFT + plot_w}" y2="{PAD_TOP + plot_h}"/>',
        f'<text class="tick" x="{PAD_LEFT - 4}" y="{PAD_TOP + 8}" text-anchor="end">{peak}</text>',
        f'<text class="tick" x="{PAD_LEFT - 4}" y="{PAD_TOP + plot_h}" text-anchor="end">0</text>',
        f'<text class="tick rate" x="{PAD_LEFT + plot_w + 4}" y="{PAD_TOP + 8}">100%</text>',
        f'<text class="tick rate" x="{PAD_LEFT + plot_w + 4}" y="{PAD_TOP + plot_h}">0%</text>',
        f'<text class="tick" x="{PAD_LEFT}" y="{HEIGHT - 6}">−60 min</text>',
        f'<text class="tick" x="{PAD_LEFT + plot_w}" y="{HEIGHT - 6}" text-anchor="end">now</text>',
    ]
    points = []
    for index, bucket in enumerate(buckets):
        x = PAD_LEFT + index * slot
        done, failed = bucket["completed"], bucket["failed"]
        done_h = plot_h * done / peak
        failed_h = plot_h * failed / peak
        base = PAD_TOP + plot_h
        minute = bucket["minute"].strftime("%H:%M") if hasattr(bucket["minute"], "strftime") else bucket["minute"]
        tip = f"<title>{minute} UTC: {done} completed, {failed} failed</title>"
        if done:
            out.append(f'<rect class="bar-completed" x="{x:.1f}" y="{base - done_h:.1f}" '
                       f'width="{bar:.1f}" height="{done_h:.1f}">{tip}</rect>')
        if failed:
            out.append(f'<rect class="bar-failed" x="{x:.1f}" y="{base - done_h - failed_h:.1f}" '
                       f'width="{bar:.1f}" height="{failed_h:.1f}">{tip}</rect>')
        if done + failed:
            points.append(f"{x + bar / 2:.1f},{base - plot_h * failed / (done + failed):.1f}")
    if len(points) > 1:
        out.append(f'<polyline class="rate-line" points="{" ".join(points)}"/>')
    out.append("</svg>")
    return "\n".join(out)


ROW_H, LABEL_W, TIMELINE_W, MAX_ROWS = 22, 170, 640, 60


def _seconds(value: Any) -> float | None:
    from datetime import datetime

    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def _label(task: dict[str, Any]) -> str:
    name = task.get("step") or task.get("task_type") or "task"
    if task.get("item") is not None:
        name += f"[{task['item']}]"
    if task.get("kind") and task["kind"] != "step":
        name = f"{name} ({task['kind'].replace('_', ' ')})"
    return name


def timeline_svg(run: dict[str, Any], tasks: Sequence[dict[str, Any]]) -> str:
    """One bar per task from its start to its end (or now), on the run's time axis."""
    import time as _time
    from html import escape

    rows = list(tasks)[:MAX_ROWS]
    start = _seconds(run.get("started_at")) or _seconds(run.get("created_at")) or _time.time()
    ends = [_seconds(t.get("finished_at")) or _time.time() for t in rows] + [_seconds(run.get("finished_at")) or 0]
    end = max([start + 0.001, *ends])
    span = end - start
    plot_w = TIMELINE_W - LABEL_W - 70
    height = max(1, len(rows)) * ROW_H + 26
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 {TIMELINE_W} {height}" '
        f'role="img" aria-label="Timeline of {len(rows)} tasks over {span:.1f} seconds">',
        f'<text class="tick" x="{LABEL_W}" y="{height - 6}">0 s</text>',
        f'<text class="tick" x="{LABEL_W + plot_w}" y="{height - 6}" text-anchor="end">{span:.2f} s</text>',
    ]
    for index, task in enumerate(rows):
        y = index * ROW_H + 4
        label = escape(_label(task)[:28])
        status = "".join(c for c in str(task.get("status", "")).lower() if c.isalpha() or c == "_")
        begin = _seconds(task.get("started_at"))
        out.append(f'<text class="label" x="{LABEL_W - 8}" y="{y + 14}" text-anchor="end">{label}</text>')
        if begin is None:
            out.append(f'<text class="waiting" x="{LABEL_W}" y="{y + 14}">{escape(status or "waiting")}</text>')
            continue
        finish = _seconds(task.get("finished_at")) or _time.time()
        x = LABEL_W + plot_w * (begin - start) / span
        width = max(2.0, plot_w * (finish - begin) / span)
        took = f"{(finish - begin):.2f} s"
        out.append(
            f'<rect class="bar status-{status}" x="{x:.1f}" y="{y + 2}" width="{width:.1f}" height="{ROW_H - 8}" rx="3">'
            f"<title>{label}: {escape(status)}, {took}</title></rect>"
            f'<text class="took" x="{min(x + width + 4, TIMELINE_W - 66):.1f}" y="{y + 14}">{took}</text>'
        )
    if len(tasks) > MAX_ROWS:
        out.append(f'<text class="tick" x="4" y="{height - 6}">and {len(tasks) - MAX_ROWS} more</text>')
    out.append("</svg>")
    return "\n".join(out)

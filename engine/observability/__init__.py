"""What the processes tell operators: Prometheus metrics, OpenTelemetry traces, structured logs.

Imported by every layer; imports nothing of the engine but ``engine.settings`` and
``engine.core`` (never the store or the runtime).
"""

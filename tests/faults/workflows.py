"""The workflows of the fault suite; every HTTP step targets the local sink (``params.base``)."""

# Five HTTP steps in a chain; the sink answers {ok, step} and records each Idempotency-Key.
CHAIN = """
flow 1
workflow fault_chain(base: string, i: int) {
  defaults { timeout 10s  retry { attempts: 5, delay: 100ms, backoff: 2.0, max_delay: 1s, jitter: false } }
  step s1: http { method: "POST"  url: "${params.base}/s1"  body: { run: workflow.run_id, i: params.i }  compensate none "sink" }
  step s2: http { method: "POST"  url: "${params.base}/s2"  body: { run: workflow.run_id, prev: steps.s1.output.body.step }  compensate none "sink" }
  step s3: http { method: "POST"  url: "${params.base}/s3"  body: { run: workflow.run_id, prev: steps.s2.output.body.step }  compensate none "sink" }
  step s4: http { method: "POST"  url: "${params.base}/s4"  body: { run: workflow.run_id, prev: steps.s3.output.body.step }  compensate none "sink" }
  step s5: http { method: "POST"  url: "${params.base}/s5"  body: { run: workflow.run_id, prev: steps.s4.output.body.step }  compensate none "sink" }
  output { last: steps.s5.output.body.step }
}
"""

# A saga: two steps with undo actions, then a step that fails for good (the sink answers 400 to
# /fail), so the run compensates s2 then s1. ``undo`` picks the undo path (/undo or /undo_fail).
SAGA = """
flow 1
workflow fault_saga(base: string, i: int, undo: string = "undo") {
  defaults { timeout 10s  retry { attempts: 3, delay: 100ms, backoff: 2.0, max_delay: 1s, jitter: false } }
  step s1: http {
    method: "POST"  url: "${params.base}/s1"  body: { run: workflow.run_id }
    compensate http { method: "POST"  url: "${params.base}/${params.undo}/s1"  body: { run: workflow.run_id } }
  }
  step s2: http {
    after s1
    method: "POST"  url: "${params.base}/s2"  body: { run: workflow.run_id }
    compensate http { method: "POST"  url: "${params.base}/${params.undo}/s2"  body: { run: workflow.run_id } }
  }
  step s3: http {
    after s2
    method: "POST"  url: "${params.base}/fail"  body: { run: workflow.run_id }
    compensate none "fails anyway"
  }
}
"""

# One HTTP step whose target kills the worker that calls it (the sink does it): a poison task.
POISON = """
flow 1
workflow fault_poison(base: string) {
  step boom: http {
    method: "POST"  url: "${params.base}/poison"  body: { run: workflow.run_id }
    timeout 30s
    retry { attempts: 2, delay: 100ms, backoff: 2.0, max_delay: 1s, jitter: false }
    compensate none "sink"
  }
}
"""

# A slow step (the sink sleeps on /slow) to race commands against.
SLOW = """
flow 1
workflow fault_slow(base: string, delay: float = 1.0) {
  defaults { timeout 20s }
  step a: http { method: "POST"  url: "${params.base}/slow"  body: { run: workflow.run_id, delay: params.delay }  compensate http { method: "POST"  url: "${params.base}/undo/a"  body: { run: workflow.run_id } } }
  step b: http { after a  method: "POST"  url: "${params.base}/s2"  body: { run: workflow.run_id }  compensate none "sink" }
}
"""

ALL = CHAIN + SAGA.replace("flow 1", "") + POISON.replace("flow 1", "") + SLOW.replace("flow 1", "")

# The SIGSTOP scenario's workflow (its cluster sets FLOW_LEASE_SECONDS=2: lease = 2 s + 5 s grace).
STOPPABLE = """
flow 1
workflow fault_stop(base: string) {
  defaults { timeout 2s }
  step a: http { method: "POST"  url: "${params.base}/slow"  body: { run: workflow.run_id, delay: 0.5 }  compensate none "sink" }
  step b: http { method: "POST"  url: "${params.base}/s2"  body: { run: workflow.run_id, prev: steps.a.output.body.step }  compensate none "sink" }
}
"""

ALL = ALL + STOPPABLE.replace("flow 1", "")
CHAIN_PATHS = ("/s1", "/s2", "/s3", "/s4", "/s5")

# A fast schedule (``schedule_kills`` in scenarios.py): one HTTP step per fire; the sink sees the
# fire time, so a fire launched twice would show as two effects (two keys) for one time.
TICK = """
flow 1
workflow fault_tick(base: string = "http://127.0.0.1:1") {
  schedule every %(every)s { params: { base: "%(base)s" } }
  step a: http { method: "POST"  url: "${params.base}/tick"  body: { run: workflow.run_id, fire: workflow.scheduled_at }  compensate none "sink" }
}
"""

"""The benchmark's workflows: noop steps only, so that what is measured is the engine."""

ONE = """
flow 1
workflow bench_one(i: int = 0) {
  step only: noop { output: params.i }
}
"""

CHAIN = """
flow 1
workflow bench_chain(i: int = 0) {
  step a: noop { output: params.i }
  step b: noop { output: steps.a.output }
  step c: noop { output: steps.b.output }
  output { i: steps.c.output }
}
"""

FAN = """
flow 1
workflow bench_fan(items: list<int>) {
  step first: noop { output: params.items }
  step fan: noop {
    for each x in steps.first.output concurrency 100
    output: x
  }
  step last: noop { output: len(steps.fan.output) }
  output { n: steps.last.output }
}
"""

SOURCES = {"bench_one": ONE, "bench_chain": CHAIN, "bench_fan": FAN}

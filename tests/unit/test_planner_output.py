"""The run output sees the final state of every step, fan-outs included."""

from dsl import compile_source
from engine.core.planner import walk as planner
from engine.core.planner.view import RunView, SetRunStatus, TaskView
from engine.core.states import RunStatus, TaskStatus

SOURCE = """
workflow demo(xs: list<int> = [1, 2, 3]) {
  step big: filter { input: params.xs, where: item > 1 }
  step plus: noop {
    for each x in steps.big.output
    output: x + 1
  }
  output { big: steps.big.output, plus: steps.plus.output }
}
"""


def test_output_reads_a_fan_out_that_finished_last():
    # Given a run whose last step is a fan-out with every item completed
    spec = compile_source(SOURCE, "demo.flow").specs[0]
    done = TaskStatus.COMPLETED
    tasks = (
        TaskView("1", "step", "big", None, done, [2, 3], None, 1, 1),
        TaskView("2", "step", "plus", 0, done, 3, None, 1, 2),
        TaskView("3", "step", "plus", 1, done, 4, None, 1, 3),
    )
    run = RunView("r", RunStatus.RUNNING, {"xs": [1, 2, 3]}, {}, tasks, "demo")
    # When the planner plans it
    actions = planner.next_actions(spec, run)
    # Then the run completes with the fan-out's outputs in input order
    assert actions == [
        SetRunStatus(RunStatus.COMPLETED, output={"big": [2, 3], "plus": [3, 4]})
    ]

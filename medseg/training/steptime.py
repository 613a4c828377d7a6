"""The step-time monitor: a session's first training steps against the plan's estimate, said once.

A time-limited run takes as many steps as its minutes allow, so a step twice as slow as planned
halves the training. The monitor times the first steps of a session (after a warm-up), compares
their median with ``training.planned_step_seconds`` (or, on a CPU, the planner's formula at the
threads torch uses) and says once what it found, with advice when it is far off.
"""

from __future__ import annotations

import statistics

import torch

from medseg.config.schema import Pipeline
from medseg.planning.compute import pipeline_step_seconds

#: The first steps of a session not counted when the step time is compared with the plan's (warm-up).
STEP_CHECK_SKIP = 2
#: Steps timed, after the warm-up, for that comparison.
STEP_CHECK_STEPS = 10
#: A real step time off the plan's estimate by more than this share is reported.
STEP_CHECK_TOLERANCE = 0.3


class StepTimeMonitor:
    """Times a session's first steps; :meth:`record` returns the one finding, once.

    Args:
        pipeline: its ``training.planned_step_seconds`` is the plan's estimate.
        device: where training runs (without a planned time, only a CPU has an estimate).
    """

    def __init__(self, pipeline: Pipeline, device: torch.device) -> None:
        self.pipeline = pipeline
        self.device = device
        self._times: list[float] = []
        self.done = False

    def record(self, seconds: float) -> tuple[str, bool] | None:
        """Add one step's seconds (data loading excluded); after the last timed step, the finding.

        Returns:
            ``(message, off)`` once (``off``: far from the plan, a warning), else None.
        """
        if self.done:
            return None
        self._times.append(seconds)
        if len(self._times) < STEP_CHECK_SKIP + STEP_CHECK_STEPS:
            return None
        self.done = True
        expected, source = self.expected()
        if expected is None:
            return None
        real = statistics.median(self._times[STEP_CHECK_SKIP:])
        ratio = real / expected
        if abs(ratio - 1.0) <= STEP_CHECK_TOLERANCE:
            return f"training steps take {real:.3f} s, as planned ({expected:.3f} s, {source})", False
        advice = (
            "steps are slower than planned, so a time-limited run takes fewer of them: keep other work off "
            "the machine while it trains, plan for the threads training really gets (`medseg plan --threads N`), "
            "or shrink training.patch_size"
            if ratio > 1
            else "steps are faster than planned: re-planning on this machine would allow a larger patch"
        )
        message = (
            f"training steps take {real:.3f} s (median of steps {STEP_CHECK_SKIP + 1}-"
            f"{STEP_CHECK_SKIP + STEP_CHECK_STEPS}, data loading excluded), {ratio:.1f}x the plan's estimate of "
            f"{expected:.3f} s ({source}); {advice}"
        )
        return message, True

    def expected(self) -> tuple[float | None, str]:
        """The plan's step time: recorded in the pipeline, else on a CPU the planner's formula."""
        planned = self.pipeline.training.planned_step_seconds
        if planned is not None:
            return planned, "training.planned_step_seconds"
        if self.device.type == "cpu":
            threads = torch.get_num_threads()
            return pipeline_step_seconds(self.pipeline, threads=threads), f"the planner's formula, {threads} threads"
        return None, ""

"""Time-limited runs: how much validation they can afford, what to hold back for the end, when to stop.

A sliding-window validation of whole scans can cost more than the training it
judges (on a CPU, a few large scans at a small window take minutes). Under a time
limit the loop therefore keeps validation to a share of the wall time
(``training.validation_share``, 10% by default), split in two halves:

* the **closing validation** of the final weights, always run before the model is
  exported, on as many validation cases (in split order) as its half allows at the
  measured cost per window; the deadline is moved forward by its cost, plus the
  time of the export, so that training stops in time for both;
* **validations during training**, each allowed only when validation so far,
  plus this one, stays within its half of the time spent so far.

Every validation of the run uses the same cases, so their scores compare when the
best epoch is chosen. Costs are estimated from the number of sliding windows and
the measured seconds per window (a forward pass timed before the first epoch, then
the real validations); :meth:`ValidationBudget.record` keeps the estimate honest.
The export's share of the reserve grows with the network (:func:`export_seconds`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the policy only calls the group's methods; this module stays free of torch
    from medseg.training.distributed import Distributed

#: Held back before the deadline, besides the closing validation, for saving the last checkpoint
#: and exporting the model folder: this many seconds, plus :data:`EXPORT_SECONDS_PER_MILLION` per
#: million parameters (weights, optimiser state and a copy are written; a 30M-parameter nnU-Net-sized
#: net writes about 0.5 GB).
EXPORT_SECONDS = 1.0
EXPORT_SECONDS_PER_MILLION = 0.5
#: Cost of one validation case besides its windows (resampling, argmax, Dice), in windows.
CASE_OVERHEAD_WINDOWS = 1.0


@dataclass
class ValidationBudget:
    """Decides when a time-limited run validates, and on which cases.

    Args:
        share: the most of the run's wall time validation may take (``0 < share <= 1``).
        seconds: the run's time budget (deadline minus the start of training), in seconds.
        windows: per validation case, the sliding windows a validation of it runs.
        seconds_per_window: the measured (or estimated) cost of one window.
        parameters: the network's parameter count (what the export writes).
    """

    share: float
    seconds: float
    windows: Sequence[int]
    seconds_per_window: float
    parameters: int = 0
    spent: float = 0.0
    cases: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cases = self._closing_cases()

    @property
    def closing_seconds(self) -> float:
        """The estimated cost of one validation of :attr:`cases` (the closing validation's)."""
        return self.estimate(self.cases)

    @property
    def reserve(self) -> float:
        """Seconds to hold back before the deadline: the closing validation and the export."""
        return self.closing_seconds + export_seconds(self.parameters)

    def estimate(self, cases: Sequence[int]) -> float:
        """The estimated seconds of validating ``cases`` (indices into :attr:`windows`)."""
        return sum(self.windows[c] + CASE_OVERHEAD_WINDOWS for c in cases) * self.seconds_per_window

    def due(self, elapsed: float) -> bool:
        """Whether a validation during training fits, ``elapsed`` seconds into the run."""
        if not self.cases:
            return False
        cost = self.closing_seconds
        return self.spent + cost <= self.share / 2 * (elapsed + cost)

    def record(self, seconds: float) -> None:
        """Count a validation of :attr:`cases` that took ``seconds``, and learn its cost per window."""
        self.spent += seconds
        windows = sum(self.windows[c] + CASE_OVERHEAD_WINDOWS for c in self.cases)
        if windows > 0:
            self.seconds_per_window = seconds / windows

    def describe(self) -> str:
        """One line for the run's log: the cases validated and what they cost."""
        total = len(self.windows)
        if not self.cases:
            return (
                f"validation skipped: one case would take an estimated {self.estimate([0]):.0f} s, over "
                f"{self.share:.0%} of the {self.seconds / 60:.1f}-minute budget; the last epoch is exported unscored"
            )
        subset = "every validation case" if len(self.cases) == total else f"{len(self.cases)} of {total} cases"
        return (
            f"validation on {subset} (an estimated {self.closing_seconds:.1f} s each time; at most "
            f"{self.share:.0%} of the {self.seconds / 60:.1f}-minute budget goes to validation, half of it "
            f"kept for the closing validation)"
        )

    def _closing_cases(self) -> list[int]:
        """The longest prefix of the cases that half the validation budget pays for (one case if the whole does)."""
        allowance = self.share * self.seconds
        chosen: list[int] = []
        for case in range(len(self.windows)):
            if self.estimate([*chosen, case]) > allowance / 2:
                break
            chosen.append(case)
        if not chosen and self.windows and self.estimate([0]) <= allowance:
            chosen = [0]
        return chosen


def export_seconds(parameters: int) -> float:
    """Seconds held back for the last checkpoint and the export of a network of ``parameters``."""
    return EXPORT_SECONDS + EXPORT_SECONDS_PER_MILLION * parameters / 1e6


class TimeLimit:
    """The time-limit policy of one training session: when to stop, what to keep back, where the schedule stands.

    Without a deadline every answer is the untimed one: never out of time, nothing kept back, the
    schedule follows the epochs. Under ``torchrun`` rank 0's clock decides for every rank.

    Args:
        deadline: ``time.monotonic()`` value by which training should stop, or None.
        group: the processes training together.
        parameters: the network's weights (the export's share of the reserve grows with them).
    """

    def __init__(self, deadline: float | None, group: Distributed, *, parameters: int) -> None:
        self.deadline = deadline
        self.group = group
        self.parameters = parameters
        #: With validation cases: when to validate, on which cases.
        self.budget: ValidationBudget | None = None
        self._start = (time.monotonic(), 0.0)  # (when this session's training began, schedule progress then)

    @property
    def limited(self) -> bool:
        return self.deadline is not None

    def start(self, progress: float, budget: ValidationBudget | None) -> None:
        """This session's training begins, ``progress`` through its schedule, validating by ``budget``."""
        self._start = (time.monotonic(), progress)
        self.budget = budget

    def seconds_left(self) -> float:
        """Until the deadline (infinite without one)."""
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def elapsed(self) -> float:
        """Since this session's training began."""
        return time.monotonic() - self._start[0]

    def schedule_progress(self, epoch_progress: float) -> float:
        """How far through its schedule training is: the epochs', or under a time limit the clock's if further.

        The clock's progress is the share of this session's time budget spent, continuing from where a
        resumed run stood, so that a 10-minute run of a pipeline planned for 1000 epochs still anneals its
        learning rate to the end rather than stopping at its start.
        """
        if self.deadline is None:
            return epoch_progress
        began, progress_then = self._start
        budget = self.deadline - began
        spent = 1.0 if budget <= 0 else min(1.0, (time.monotonic() - began) / budget)
        progress = max(epoch_progress, progress_then + (1.0 - progress_then) * spent)
        return float(self.group.broadcast(progress))

    def reserve(self) -> float:
        """Seconds to keep before the deadline: the closing validation and the export."""
        if self.budget is not None:
            return self.budget.reserve
        if self.deadline is not None:
            return export_seconds(self.parameters)
        return 0.0

    def out_of_time(self) -> bool:
        """Whether the deadline leaves less than the reserve; under DDP, rank 0's answer for all."""
        if self.deadline is None:
            return False
        return self.group.agree(time.monotonic() + self.reserve() >= self.deadline)

"""The time budget: how many steps fit a run's minutes, planned from the pace the run measures as it goes.

A fixed step count leaves most of the minutes unused on a fast machine and overruns on a slow one; a plan made once
from a few early steps is as noisy as the machine. So the run plans at step 50 from the pace over steps 10-50, and
again at every validation from the pace since the last plan and what each validation took, so that a machine that
speeds up or slows down mid-run still ends on its budget. The cosine decay follows the latest plan.
"""

from __future__ import annotations

from dataclasses import dataclass

# The first plan's pace is measured over these steps: after the first ones, whose kernels are still being built, and
# early enough that the plan is made during the warm-up, before the cosine decay that depends on it.
CALIBRATION_STEPS = (10, 50)


def planned_step_count(
    budget_s: float,
    spent_s: float,
    step: int,
    seconds_per_step: float,
    cap: int,
    validation_s: float = 0.0,
    eval_every: int = 1,
) -> int:
    """The steps done and as many more as the rest of the budget holds at the measured pace, at most `cap`.
    validation_s: what one validation takes; one comes every `eval_every` steps and one after the last step."""
    per_step = seconds_per_step + validation_s / eval_every
    more = int((budget_s - spent_s - validation_s) / per_step)
    return max(step + 1, min(cap, step + more))


@dataclass
class TimeBudget:
    minutes: float
    cap: int  # the most steps it may plan (the run's max_steps)
    eval_every: int
    # The pace is measured from here: (step, time in steps then); from step 10 to the first plan, then from each plan
    # to the next, so that a plan follows the machine's latest pace.
    since: tuple[int, float] | None = None
    validation_s: float = 0.0  # time in validation so far
    validations: int = 0

    def step_done(self, step: int, steps_s: float) -> bool:
        """Called after every step, with the time in training steps so far (validation left out): starts the pace's
        measure at step 10, and says whether a plan is due (step 50, then every validation)."""
        first, last = CALIBRATION_STEPS
        if step == first:
            self.since = (step, steps_s)
        return self.since is not None and (step == last or (step > last and step % self.eval_every == 0))

    def plan(self, step: int, steps_s: float) -> tuple[int, float]:
        """The step count that fits the budget, and the pace (seconds a step) it was planned with."""
        assert self.since is not None
        pace = (steps_s - self.since[1]) / (step - self.since[0])
        self.since = (step, steps_s)
        per_validation = self.validation_s / self.validations if self.validations else 0.0
        # A validation point plans before its own validation: that one is spent too.
        spent_s = steps_s + self.validation_s + (per_validation if step % self.eval_every == 0 else 0.0)
        planned = planned_step_count(self.minutes * 60, spent_s, step, pace, self.cap, per_validation, self.eval_every)
        return planned, pace

    def validated(self, seconds: float) -> None:
        self.validation_s += seconds
        self.validations += 1

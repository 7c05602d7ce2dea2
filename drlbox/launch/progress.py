"""Progress shown to the user while training: a bar with steps, steps/s and returns."""
from __future__ import annotations

import math
import sys

from drlbox.roles.interfaces import JobStatus


class Progress:
    """A tqdm bar over train_steps when verbose; silent otherwise."""

    def __init__(self, verbose: bool, total_steps: int, description: str,
                 initial_steps: int = 0):
        self._bar = None
        if verbose:
            from tqdm import tqdm

            # initial_steps: a job followed mid-way; its rate counts from here, not from 0.
            self._bar = tqdm(total=total_steps, desc=description, unit="step", file=sys.stderr,
                             dynamic_ncols=True, smoothing=0.1,
                             initial=min(initial_steps, total_steps))

    def update(self, status: JobStatus) -> None:
        """Move the bar to the job's global steps and show its latest figures."""
        if self._bar is None:
            return
        self._bar.n = min(status.global_steps, self._bar.total)
        postfix = {"steps/s": f"{status.steps_per_sec:.0f}", "episodes": status.episodes}
        if not math.isnan(status.recent_return):
            postfix["return"] = f"{status.recent_return:.1f}"
        if status.evaluations:
            postfix["eval"] = f"{status.evaluations[-1].mean_return:.1f}"
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.refresh()

    def write(self, message: str) -> None:
        """A line of text that does not break the bar."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()

"""What a job carries across a parameter-server restart: written and read here, nowhere else.

A job's resume state has two parts:

* its position: the model file holding the weights, each slice's versions, optimizer and aux
  state, and what goes with those weights (global env steps, updates, training time, the
  checkpoints saved so far). A restarted job goes back to it: the steps trained after it are
  trained again.
* its history: evaluations, episodes finished and the last training returns. It does not go
  back with the position: a restart keeps it as of the last checkpoint or evaluation,
  whichever came later (a kill loses only the episodes finished since).

Each checkpoint writes both to the resume file (`.resume-<job_id>.npz`, replaced atomically).
An evaluation (rare, and lost for good if not written at once) writes the history alone to a
file beside it (`.resume-<job_id>.history.json`), which the next checkpoint makes redundant and
removes; a restore takes whichever of the two histories is newer (the larger: history only
grows).

An evaluation at a step beyond the position a job resumes from measured weights that the
restart lost; it stays in the history all the same (the measurement did happen and was
reported), and the job keeps one evaluation per step: a report for a step it already has is
not recorded again.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from drlbox.roles.interfaces import Checkpoint, Evaluation, ShardState

RECENT_RETURNS = 100        # training returns a job's status carries


def _recent() -> collections.deque:
    return collections.deque(maxlen=RECENT_RETURNS)


@dataclass
class JobHistory:
    """What a job reported: evaluations (one per step), episodes finished, recent returns."""

    evaluations: list[Evaluation] = field(default_factory=list)
    episodes: int = 0
    recent_returns: collections.deque = field(default_factory=_recent)

    def add_episodes(self, returns: Sequence[float]) -> None:
        """Count finished training episodes and keep their returns."""
        self.episodes += len(returns)
        self.recent_returns.extend(float(r) for r in returns[-RECENT_RETURNS:])

    def add_evaluation(self, evaluation: Evaluation) -> bool:
        """Record `evaluation` unless the job has one at its step already; whether it did."""
        if any(e.global_steps == evaluation.global_steps for e in self.evaluations):
            return False
        self.evaluations.append(evaluation)
        return True

    def to_plain(self) -> dict:
        """Plain data for JSON."""
        return {"evaluations": [dataclasses.astuple(e) for e in self.evaluations],
                "episodes": self.episodes, "recent_returns": list(self.recent_returns)}

    @staticmethod
    def from_plain(data: dict) -> "JobHistory":
        """Inverse of `to_plain` (also reads the keys resume files carried before the history
        had a file of its own)."""
        history = JobHistory([Evaluation(*e) for e in data.get("evaluations", [])],
                             int(data.get("episodes", 0)))
        history.recent_returns.extend(float(r) for r in data.get("recent_returns", []))
        return history


@dataclass
class Position:
    """Where a checkpoint left the job. `slots` are the slices' states without their weights
    (empty arrays: the weights are in the model file at `model_path`)."""

    model_path: str
    global_steps: int
    updates: int
    train_seconds: float
    checkpoints: list[Checkpoint]
    slots: list[ShardState]


class ResumeJournal:
    """The resume files of one job; `resume_file` is the position's path (`.npz`)."""

    def __init__(self, resume_file: str):
        self.position_path = resume_file
        self.history_path = f"{os.path.splitext(resume_file)[0]}.history.json"
        self._position_tmp = f"{resume_file}.tmp.npz"
        self._history_tmp = f"{self.history_path}.tmp"

    def save_position(self, position: Position, history: JobHistory) -> None:
        """Replace the resume file (with a checkpoint)."""
        arrays, slots = {}, []
        for k, state in enumerate(position.slots):
            slots.append({"version": state.version, "aux_version": state.aux_version,
                          "updates": state.updates})
            if state.aux is not None:
                arrays[f"s{k}_aux"] = state.aux
            arrays.update({f"s{k}_opt_{i}": v for i, v in enumerate(state.optimizer or [])})
        meta = {"model_path": position.model_path, "global_steps": position.global_steps,
                "updates": position.updates, "train_seconds": position.train_seconds,
                "checkpoints": [dataclasses.astuple(c) for c in position.checkpoints],
                "slots": slots, **history.to_plain()}
        arrays["meta"] = np.array(json.dumps(meta))
        np.savez(self._position_tmp, **arrays)
        os.replace(self._position_tmp, self.position_path)
        if os.path.exists(self.history_path):
            os.remove(self.history_path)

    def save_history(self, history: JobHistory) -> None:
        """Save the history between checkpoints (with an evaluation)."""
        with open(self._history_tmp, "w") as f:
            json.dump(history.to_plain(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(self._history_tmp, self.history_path)

    def load(self) -> tuple[Position | None, JobHistory]:
        """The saved position (None when no checkpoint was saved) and history."""
        position, meta = None, {}
        if os.path.exists(self.position_path):
            position, meta = self._load_position()
        history = JobHistory.from_plain(meta)
        if os.path.exists(self.history_path):
            with open(self.history_path) as f:
                later = JobHistory.from_plain(json.load(f))
            history = max(history, later, key=lambda h: (len(h.evaluations), h.episodes))
        return position, history

    def _load_position(self) -> tuple[Position, dict]:
        with np.load(self.position_path) as saved:
            meta = json.loads(str(saved["meta"]))
            slots = []
            for k, slot in enumerate(meta["slots"]):
                count = sum(name.startswith(f"s{k}_opt_") for name in saved.files)
                optimizer = [saved[f"s{k}_opt_{i}"] for i in range(count)] or None
                aux = saved[f"s{k}_aux"] if f"s{k}_aux" in saved.files else None
                slots.append(ShardState(np.zeros(0, np.float32), slot["version"], aux,
                                        slot["aux_version"], optimizer, slot["updates"]))
        position = Position(meta["model_path"], int(meta["global_steps"]), int(meta["updates"]),
                            float(meta["train_seconds"]),
                            [Checkpoint(*c) for c in meta["checkpoints"]], slots)
        return position, meta

    def remove(self) -> None:
        """Delete the resume files: the job is over, nothing is left to resume."""
        _remove_if_there(self.position_path, self.history_path)

    def remove_partial_writes(self) -> None:
        """Delete what a save interrupted by a crash left behind."""
        _remove_if_there(self._position_tmp, self._history_tmp)


def _remove_if_there(*paths: str) -> None:
    for path in paths:
        if os.path.exists(path):
            os.remove(path)

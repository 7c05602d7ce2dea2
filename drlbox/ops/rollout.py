"""Rollout lists and the padded, time-major batch the losses consume.

A rollout list is a contiguous piece of one episode, at most `rollout_maxlen` steps:
``obs`` [n+1, ...] (the last one is the bootstrap observation: for a truncated episode its final
observation), ``actions`` [n] or [n, D], ``rewards`` [n], ``behaviour`` [n, K] (the behaviour
policy's logits or Gaussian parameters) and ``terminated`` [1] (1 when the episode ended by
termination after the last step, so nothing is bootstrapped).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

RolloutList = dict  # name -> np.ndarray, as described above


def make_list(obs: Sequence[np.ndarray], actions: Sequence, rewards: Sequence[float],
              behaviour: Sequence[np.ndarray], terminated: bool, behaviour_size: int) -> RolloutList:
    """Assemble a rollout list from per-step records."""
    n = len(rewards)
    return {
        "obs": np.stack(obs),
        "actions": np.asarray(actions),
        "rewards": np.asarray(rewards, np.float32),
        "behaviour": (np.stack(behaviour).astype(np.float32, copy=False) if n and behaviour_size
                      else np.zeros((n, behaviour_size), np.float32)),
        "terminated": np.array([terminated], np.uint8),
    }


def _packed_dtype(obs: np.ndarray) -> np.dtype:
    # Byte images stay bytes (a quarter of float32 to copy; the loss casts them); all else is
    # float32, as the model takes it.
    return np.dtype(np.uint8) if obs.dtype == np.uint8 else np.dtype(np.float32)


def pack_lists(lists: Sequence[RolloutList], discount: float,
               weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Pad rollout lists into time-major arrays [T(+1), L, ...] with masks and trace cuts.

    ``obs`` [T+1, L, ...] is float32, or uint8 when the lists hold uint8 observations.

    ``discount`` [T, L] is gamma, except 0 after a terminating last step and in padding;
    ``lambda`` [T, L] is 1 where the list goes on and 0 at its last step; ``mask`` marks valid
    steps; ``weights`` [L] are replay importance weights (ones by default).
    """
    lengths = np.array([len(r["rewards"]) for r in lists])
    steps, count = int(lengths.max()), len(lists)
    first = lists[0]
    obs = np.empty((steps + 1, count) + first["obs"].shape[1:], _packed_dtype(first["obs"]))
    actions = np.zeros((steps, count) + first["actions"].shape[1:], first["actions"].dtype)
    rewards = np.zeros((steps, count), np.float32)
    behaviour = np.zeros((steps, count, first["behaviour"].shape[-1]), np.float32)
    time = np.arange(steps)[:, None]
    mask = (time < lengths[None, :]).astype(np.float32)
    terminated = np.array([bool(r["terminated"][0]) for r in lists])
    last = time == (lengths - 1)[None, :]
    discount_t = np.where(last & terminated[None, :], 0.0, discount) * mask
    lambda_t = mask * (1.0 - last)
    for i, (r, n) in enumerate(zip(lists, lengths)):
        obs[:n + 1, i] = r["obs"]
        obs[n + 1:, i] = r["obs"][-1]      # padding: any valid input, never used by the loss
        actions[:n, i] = r["actions"]
        rewards[:n, i] = r["rewards"]
        behaviour[:n, i] = r["behaviour"]
    return {"obs": obs, "actions": actions, "rewards": rewards, "behaviour": behaviour,
            "mask": mask, "discount": discount_t.astype(np.float32),
            "lambda": lambda_t.astype(np.float32),
            "weights": (np.ones(count, np.float32) if weights is None
                        else np.asarray(weights, np.float32))}


# --- what a job's rollout lists look like --------------------------------------------------
# Leading dimension of each array of a list of n steps: n + 1, n, or a fixed 1.
_LEADING = {"obs": 1, "actions": 0, "rewards": 0, "behaviour": 0, "terminated": None}


def list_spec(example: RolloutList, num_actions: int | None = None) -> dict[str, list]:
    """{name: [dtype, shape after the leading dimension(, values' exclusive upper bound)]} of
    a job's rollout lists, read off one list a worker would make (plain data, for JSON).
    With `num_actions` (a discrete action space) actions are indices below it."""
    spec = {name: [example[name].dtype.str, list(example[name].shape[1:])]
            for name in _LEADING}
    spec["terminated"].append(2)
    if num_actions is not None:
        spec["actions"].append(int(num_actions))
    return spec


def check_list(rollout: RolloutList, spec: dict[str, list], maxlen: int) -> None:
    """ValueError naming the array, unless `rollout` is a list this job makes: the same names,
    dtypes and shapes, 1 to `maxlen` steps, finite floats and integers within their bounds."""
    if set(rollout) != set(spec):
        raise ValueError(f"a rollout list holds {sorted(rollout)}, this job's hold "
                         f"{sorted(spec)}")
    steps = rollout["rewards"].shape[0] if rollout["rewards"].ndim else -1
    if not 1 <= steps <= maxlen:
        raise ValueError(f"rewards: a list has 1 to {maxlen} steps, got {steps}")
    for name, (dtype, shape, *bound) in spec.items():
        array, extra = rollout[name], _LEADING[name]
        leading = 1 if extra is None else steps + extra
        if array.dtype.str != dtype or array.shape != (leading, *shape):
            raise ValueError(f"{name}: must be {np.dtype(dtype).name} {(leading, *shape)}, "
                             f"got {array.dtype.name} {array.shape}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ValueError(f"{name}: must be finite")
        if bound and array.size and not (array.min() >= 0 and array.max() < bound[0]):
            raise ValueError(f"{name}: values must be 0 to {bound[0] - 1}, got "
                             f"{array.min()} to {array.max()}")


def max_list_bytes(spec: dict[str, list], maxlen: int) -> int:
    """The most bytes one list of this job's can hold."""
    total = 0
    for name, (dtype, shape, *_) in spec.items():
        extra = _LEADING[name]
        leading = 1 if extra is None else maxlen + extra
        total += np.dtype(dtype).itemsize * leading * int(np.prod(shape, dtype=np.int64))
    return total

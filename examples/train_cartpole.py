"""`make train`: A3C learns CartPole-v1 until it is solved, then the saved model plays.

Trains with the A3C preset of cartpole_presets.py until a greedy evaluation of 20 episodes
averages >= 475 (at most 300k env steps). The final model, under runs/cartpole_a3c/, is the one
that evaluation played (training goes on while the evaluator plays, but reaching target_return
saves the judged weights). It plays 20 greedy episodes of its own here; should it fall short on
these, the checkpoints saved every 2,000 env steps nearest to the solving evaluation play too,
and the first that averages >= 475 is named.
"""
import os
import sys

from cartpole_presets import cartpole, cartpole_trainer, first_solved

SAVE_DIR = os.path.join("runs", "cartpole_a3c")
SOLVED = 475.0
EPISODES = 20


def greedy_returns(path: str) -> list:
    """Returns of EPISODES greedy episodes played by the model saved at `path`."""
    from drlbox.evaluator import make_evaluator

    return make_evaluator("a3c", env_maker=cartpole, load_model=path, num_episodes=EPISODES,
                          policy_type="greedy", seed=1).run().returns


def candidates(result, solved) -> list:
    """The final model, then the other checkpoints nearest to the solving evaluation."""
    final, others = result.checkpoints[-1], result.checkpoints[:-1]
    return [final] + sorted(others, key=lambda c: abs(c.global_steps - solved.global_steps))[:3]


def main() -> int:
    print(f"drlbox: training A3C on CartPole-v1 until a greedy evaluation of {EPISODES} "
          f"episodes averages >= {SOLVED:.0f} (at most 300k env steps)", flush=True)
    result = cartpole_trainer("a3c", save_dir=SAVE_DIR, save_interval=2000).run()
    solved = first_solved(result)
    if solved is None:
        print(f"drlbox: not solved within {result.global_steps} env steps ({result.message})")
        return 1
    print(f"drlbox: solved: {solved.mean_return:.1f} at {solved.global_steps:,} env steps, "
          f"{solved.wall_seconds:.1f} s into the run")
    for checkpoint in candidates(result, solved):
        returns = greedy_returns(checkpoint.path)
        mean = sum(returns) / len(returns)
        print(f"drlbox: {checkpoint.path} ({checkpoint.global_steps:,} env steps), {EPISODES} "
              f"greedy episodes: mean return {mean:.1f} (min {min(returns):.0f}, "
              f"max {max(returns):.0f})")
        if mean >= SOLVED:
            print(f"        play it:  make_evaluator('a3c', env_maker=..., "
                  f"load_model={checkpoint.path!r})\n"
                  f"        load it:  keras.models.load_model({checkpoint.path!r})")
            return 0
    print("drlbox: none of the saved models near the solving evaluation averages "
          f">= {SOLVED:.0f} again")
    return 1


if __name__ == "__main__":
    sys.exit(main())

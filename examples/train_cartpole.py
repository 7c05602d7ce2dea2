"""`make train`: A3C learns CartPole-v1 until it is solved, then the saved model plays.

Trains with the A3C preset of cartpole_presets.py (two workers' worth of settings found on a
2-core machine) until a greedy evaluation of 20 episodes averages >= 475, at most 300k env
steps; the model is saved under runs/cartpole_a3c/. Then the saved file plays 20 greedy
episodes of its own, and the script says where it is and how to load it.
"""
import os
import sys

from cartpole_presets import cartpole, cartpole_trainer, first_solved

SAVE_DIR = os.path.join("runs", "cartpole_a3c")
SOLVED = 475.0


def main() -> int:
    print("drlbox: training A3C on CartPole-v1 until a greedy evaluation of 20 episodes "
          f"averages >= {SOLVED:.0f} (at most 300k env steps)", flush=True)
    result = cartpole_trainer("a3c", save_dir=SAVE_DIR).run()
    solved = first_solved(result)
    if solved is None:
        print(f"drlbox: not solved within {result.global_steps} env steps ({result.message})")
        return 1
    print(f"drlbox: solved after {solved.global_steps:,} env steps, {solved.wall_seconds:.1f} s "
          f"into the run")

    from drlbox.evaluator import make_evaluator

    path = result.checkpoints[-1].path
    returns = make_evaluator("a3c", env_maker=cartpole, load_model=path, num_episodes=20,
                             policy_type="greedy", seed=1).run().returns
    mean = sum(returns) / len(returns)
    print(f"drlbox: the saved model, 20 greedy episodes: mean return {mean:.1f} "
          f"(min {min(returns):.0f}, max {max(returns):.0f})\n"
          f"        play it:  make_evaluator('a3c', env_maker=..., load_model={path!r})\n"
          f"        load it:  keras.models.load_model({path!r})")
    return 0 if mean >= SOLVED else 1


if __name__ == "__main__":
    sys.exit(main())

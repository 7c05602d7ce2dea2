"""ACER solves CartPole-v1 (greedy evaluation mean >= 475) with the settings in cartpole_presets.py."""
from cartpole_presets import solve_cartpole

solve_cartpole("acer")

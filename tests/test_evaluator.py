"""make_evaluator on saved models: every evaluator argument does what it says."""
import gymnasium
import keras
import numpy as np
import pytest

from drlbox.evaluator import make_evaluator


class CountingRenders(gymnasium.Wrapper):
    """Counts render() calls; episodes last exactly `length` steps."""

    renders = 0

    def __init__(self, length=5):
        super().__init__(gymnasium.make("CartPole-v1"))
        self.length, self.t = length, 0

    def reset(self, **kwargs):
        self.t = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, _, _, _, info = self.env.step(action)
        self.t += 1
        return obs, 1.0, False, self.t >= self.length, info

    def render(self):
        CountingRenders.renders += 1


def save_policy_model(path, logits):
    """A model whose policy head always outputs `logits` (and value 0)."""
    inp = keras.Input((4,))
    zero = keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros")(inp)
    head = keras.layers.Dense(len(logits), kernel_initializer="zeros",
                              bias_initializer=keras.initializers.Constant(logits))(inp)
    keras.Model(inp, [head, zero]).save(path)
    return str(path)


@pytest.fixture
def lopsided_model(tmp_path):
    """Action 1 has probability ~0.73 under the stochastic policy and is the greedy one."""
    return save_policy_model(tmp_path / "m.keras", [0.0, 1.0])


def actions_taken(model_path, **kwargs):
    taken = []

    class Recording(CountingRenders):
        def step(self, action):
            taken.append(int(action))
            return super().step(action)

    make_evaluator("a3c", env_maker=lambda: Recording(length=50), load_model=model_path,
                   num_episodes=4, seed=0, **kwargs).run()
    return np.array(taken)


def test_greedy_takes_the_best_action_and_stochastic_samples(lopsided_model):
    assert (actions_taken(lopsided_model, policy_type="greedy") == 1).all()
    share = actions_taken(lopsided_model, policy_type="stochastic").mean()
    assert 0.6 < share < 0.86                       # e/(1+e) = 0.73


def test_policy_eps_makes_greedy_act_randomly(lopsided_model):
    share = actions_taken(lopsided_model, policy_type="greedy", policy_eps=1.0).mean()
    assert 0.35 < share < 0.65


def test_rendering_every_step_and_at_episode_end(lopsided_model):
    CountingRenders.renders = 0
    make_evaluator("a3c", env_maker=lambda: CountingRenders(5), load_model=lopsided_model,
                   num_episodes=3, render_timestep=0.0).run()
    assert CountingRenders.renders == 15
    CountingRenders.renders = 0
    make_evaluator("a3c", env_maker=lambda: CountingRenders(5), load_model=lopsided_model,
                   num_episodes=3, render_end=True).run()
    assert CountingRenders.renders == 3
    CountingRenders.renders = 0
    make_evaluator("a3c", env_maker=lambda: CountingRenders(5), load_model=lopsided_model,
                   num_episodes=2).run()
    assert CountingRenders.renders == 0


def test_returns_and_verbose_output(lopsided_model, capsys):
    result = make_evaluator("a3c", env_maker=lambda: CountingRenders(7),
                            load_model=lopsided_model, num_episodes=2, verbose=True).run()
    assert result.returns == [7.0, 7.0] and result.mean_return == 7.0
    out = capsys.readouterr().out
    assert "episode 2/2: return 7.00" in out and "mean return over 2 episodes: 7.00" in out


def test_h5_model_and_wrong_outputs(tmp_path):
    path = save_policy_model(tmp_path / "m.h5", [1.0, 0.0])
    assert make_evaluator("impala", env_maker=lambda: CountingRenders(3), load_model=path,
                          num_episodes=1).run().returns == [3.0]
    for algorithm in ("acer", "dqn"):        # (logits, value) is not their model
        with pytest.raises(ValueError, match="q_values"):
            make_evaluator(algorithm, env_maker=lambda: CountingRenders(3), load_model=path,
                           num_episodes=1).run()

"""What every algorithm provides, and the pieces they share: heads, masked means, batched forward.

An algorithm is a small object built from the trainer config and the action space. It adds its
heads to the user's features, checks a user-made model, chooses actions from the network's
outputs while collecting rollouts, and computes its loss on a packed batch (see
`drlbox.ops.rollout.pack_lists` for the batch layout). The shared rollout/learning loop lives
once in the rollout worker.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import keras
import numpy as np
import tensorflow as tf
from gymnasium import spaces

from drlbox.envs import action_dim, is_continuous
from drlbox.layers.noisy import NoisyDense
from drlbox.ops.distributions import Categorical, DiagGaussian


# How the parameter server's auxiliary weights follow the online ones after an update:
# (aux, new online weights, updates so far) -> the new aux weights, or None when unchanged.
AuxRule = Callable[[np.ndarray, np.ndarray, int], "np.ndarray | None"]


class LossOutput(NamedTuple):
    """A loss, scalars to report (name -> scalar tensor), and one replay priority per list."""

    loss: tf.Tensor
    stats: dict
    priorities: tf.Tensor


def dense(units: int, noisynet: str | None, name: str, activation: Any = None) -> keras.layers.Layer:
    """A head's Dense layer, noisy when NoisyNet is on."""
    if noisynet:
        return NoisyDense(units, noise=noisynet, activation=activation, name=name)
    return keras.layers.Dense(units, activation=activation, name=name)


def split_feature(feature: Any) -> tuple[Any, Any]:
    """(actor_feature, critic_feature) from one feature tensor or a 2-tuple of them."""
    if isinstance(feature, (tuple, list)):
        if len(feature) != 2:
            raise ValueError(f"feature_maker must return one feature or a 2-tuple "
                             f"(actor_feature, critic_feature), got {len(feature)} features")
        return feature[0], feature[1]
    return feature, feature


def policy_head(feature: Any, action_space: spaces.Space, noisynet: str | None) -> Any:
    """Logits for Discrete actions; means and log-stds (2 * dim) for Box actions."""
    units = action_dim(action_space) * (2 if is_continuous(action_space) else 1)
    return dense(units, noisynet, "policy")(feature)


def distribution(action_space: spaces.Space) -> type[Categorical] | type[DiagGaussian]:
    """The policy distribution class for an action space."""
    return DiagGaussian if is_continuous(action_space) else Categorical


def masked_mean(x: tf.Tensor, mask: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Mean of x [T, L] over valid steps, each list weighted (importance weights of replay)."""
    weighted = x * mask * weights[tf.newaxis, :]
    return tf.reduce_sum(weighted) / tf.maximum(tf.reduce_sum(mask), 1.0)


def per_list_mean(x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of x [T, L] over each list's valid steps -> [L] (replay priorities)."""
    return tf.reduce_sum(x * mask, axis=0) / tf.maximum(tf.reduce_sum(mask, axis=0), 1.0)


def forward(model: keras.Model, obs: tf.Tensor) -> list[tf.Tensor]:
    """Run the model on time-major observations [T, L, ...] (float32, or uint8 images) ->
    outputs [T, L, K]."""
    lead = tf.shape(obs)[:2]
    flat = tf.reshape(tf.cast(obs, tf.float32), tf.concat([[-1], tf.shape(obs)[2:]], 0))
    outputs = model(flat, training=True)
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return [tf.reshape(o, tf.concat([lead, tf.shape(o)[1:]], 0)) for o in outputs]


def check_outputs(model: keras.Model, expected: list[tuple[str, int]], algorithm: str) -> None:
    """Refuse a user-made model whose outputs do not match what the algorithm needs."""
    shapes = [tuple(t.shape) for t in model.outputs]
    names = ", ".join(f"{n} [batch, {k}]" for n, k in expected)
    if len(shapes) != len(expected):
        raise ValueError(f"{algorithm} needs a model with outputs ({names}); the model has "
                         f"{len(shapes)} output(s) of shapes {shapes}")
    for (name, units), shape in zip(expected, shapes):
        if len(shape) != 2 or shape[-1] != units:
            raise ValueError(f"{algorithm}: output {name!r} must have shape [batch, {units}], "
                             f"the model's has {shape}; expected outputs ({names})")


class Algorithm:
    """Base of the four algorithms; subclasses fill in heads, acting and loss."""

    name = ""
    continuous_ok = False

    def __init__(self, config: Any, action_space: spaces.Space):
        if is_continuous(action_space) and not self.continuous_ok:
            raise TypeError(f"{self.name} supports Discrete action spaces only, got "
                            f"{action_space}; use a3c or impala for continuous actions")
        self.config = config
        self.action_space = action_space
        self.num_actions = action_dim(action_space)
        self.dist = distribution(action_space)

    @classmethod
    def aux_rule(cls, config: Any) -> AuxRule | None:
        """How an auxiliary weight set (ACER's average net, DQN's target net) follows the
        online weights on the parameter server; None when the algorithm keeps none."""
        return None

    @property
    def uses_aux(self) -> bool:
        """Whether the loss reads an auxiliary network."""
        return self.aux_rule(self.config) is not None

    # --- model -------------------------------------------------------------------------
    def build_model(self, inputs: Any, feature: Any) -> keras.Model:
        """The full model: the user's feature layers plus this algorithm's heads."""
        raise NotImplementedError

    def output_spec(self) -> list[tuple[str, int]]:
        """(name, units) of each model output, in order."""
        raise NotImplementedError

    def check_model(self, model: keras.Model) -> None:
        """Refuse a model whose outputs do not fit."""
        check_outputs(model, self.output_spec(), self.name)

    # --- acting ------------------------------------------------------------------------
    @property
    def behaviour_size(self) -> int:
        """Numbers stored per step about the behaviour policy (its logits or Gaussian params)."""
        return self.output_spec()[0][1]

    def act(self, outputs: list[np.ndarray], rng: np.random.Generator,
            worker_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Training-time actions [N] and behaviour records [N, behaviour_size]."""
        logits = outputs[0]
        return self.dist.sample_np(logits, rng), logits

    # --- learning ----------------------------------------------------------------------
    def loss(self, model: keras.Model, aux_model: keras.Model | None,
             batch: dict[str, tf.Tensor]) -> LossOutput:
        """This algorithm's loss on a packed batch."""
        raise NotImplementedError


def policy_value_model(inputs: Any, feature: Any, action_space: spaces.Space,
                       noisynet: str | None, second_head: Callable[[Any], Any]) -> keras.Model:
    """Actor-critic model: policy head on the actor feature, `second_head` on the critic's."""
    actor, critic = split_feature(feature)
    return keras.Model(inputs, [policy_head(actor, action_space, noisynet), second_head(critic)])

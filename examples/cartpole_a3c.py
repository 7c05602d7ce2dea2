"""A3C on CartPole-v1 with a 200/100 ReLU feature network: the original drlbox example."""
import gymnasium
import keras

from drlbox.trainer import make_trainer


def make_feature(observation_space, num_hid_list):
    """Input layer and a stack of ReLU Dense layers on top of it."""
    inp_state = keras.Input(shape=observation_space.shape)
    feature = inp_state
    for num_hid in num_hid_list:
        feature = keras.layers.Dense(num_hid, activation="relu")(feature)
    return inp_state, feature


if __name__ == "__main__":
    trainer = make_trainer(
        "a3c",
        env_maker=lambda: gymnasium.make("CartPole-v1"),
        feature_maker=lambda obs_space: make_feature(obs_space, [200, 100]),
        num_parallel=1,
        train_steps=1000,
        verbose=True,
    )
    trainer.run()

"""Tests for drlbox.replay.memory: uniform and prioritized ring-buffer replay."""
import subprocess
import sys
import threading

import numpy as np
import pytest

from drlbox.replay import (PrioritizedReplay, ReplayNotReady, Sample, UniformReplay,
                           make_replay)

BOTH = [UniformReplay, PrioritizedReplay]


def frequencies(memory, n=20_000):
    """Empirical sampling frequency of each item (items are small ints)."""
    items = memory.sample(n).items
    return np.bincount(items, minlength=max(items) + 1) / n


@pytest.mark.parametrize("cls", BOTH)
def test_keys_are_monotonic_and_survive_eviction(cls):
    memory = cls(maxlen=3, minlen=1)
    assert [memory.append(i) for i in range(2)] == [0, 1]
    assert memory.extend(iter(range(2, 7))) == [2, 3, 4, 5, 6]
    assert memory.extend([]) == []
    assert len(memory) == 3
    assert memory.append(7) == 7


@pytest.mark.parametrize("cls", BOTH)
def test_eviction_drops_oldest_and_keys_map_to_items(cls):
    memory = cls(maxlen=3, minlen=1, seed=0)
    memory.extend(f"item{i}" for i in range(5))  # keys 0..4; 0 and 1 evicted
    sample = memory.sample(500)
    assert set(sample.items) == {"item2", "item3", "item4"}
    for item, key in zip(sample.items, sample.keys):
        assert item == f"item{key}"


@pytest.mark.parametrize("cls", BOTH)
def test_sample_types_and_item_identity(cls):
    memory = cls(maxlen=4, minlen=1, seed=0)
    item = {"obs": np.zeros(3)}
    key = memory.append(item)
    sample = memory.sample(5)
    assert isinstance(sample, Sample)
    assert isinstance(sample.items, list) and len(sample.items) == 5
    assert all(x is item for x in sample.items)  # stored as-is, never copied
    assert sample.keys.dtype == np.int64 and sample.keys.tolist() == [key] * 5
    assert sample.weights.dtype == np.float32 and sample.weights.shape == (5,)


@pytest.mark.parametrize("cls", BOTH)
def test_not_ready_error_states_len_and_minlen(cls):
    memory = cls(maxlen=10, minlen=3)
    memory.extend([0, 1])
    assert not memory.ready
    with pytest.raises(ReplayNotReady, match=r"len=2, minlen=3"):
        memory.sample(1)
    memory.append(2)
    assert memory.ready
    assert len(memory.sample(1).items) == 1


@pytest.mark.parametrize("cls", BOTH)
def test_empty_memory_with_minlen_zero_is_not_sampleable(cls):
    memory = cls(maxlen=10, minlen=0)
    with pytest.raises(ReplayNotReady, match=r"len=0, minlen=0"):
        memory.sample(1)


@pytest.mark.parametrize("cls", BOTH)
def test_same_seed_same_samples(cls):
    a, b = cls(maxlen=50, minlen=1, seed=7), cls(maxlen=50, minlen=1, seed=7)
    a.extend(range(50))
    b.extend(range(50))
    np.testing.assert_array_equal(a.sample(20).keys, b.sample(20).keys)


def test_uniform_weights_frequencies_and_noop_update():
    memory = UniformReplay(maxlen=4, minlen=1, seed=0)
    memory.extend(range(4))
    memory.update_priorities([0, 123], [1e9, -5.0])  # ignored, even nonsense
    np.testing.assert_array_equal(memory.sample(64).weights, np.ones(64, np.float32))
    np.testing.assert_allclose(frequencies(memory), 0.25, atol=0.02)


def test_prioritized_new_items_get_priority_one_when_empty():
    memory = PrioritizedReplay(maxlen=4, minlen=1, alpha=1.0, eps=0.0, seed=0)
    memory.extend([0, 1])
    memory.update_priorities([0], [3.0])  # item 1 keeps its initial 1.0
    np.testing.assert_allclose(frequencies(memory), [0.75, 0.25], atol=0.02)


def test_prioritized_frequencies_proportional_to_priority():
    memory = PrioritizedReplay(maxlen=4, minlen=1, alpha=1.0, eps=0.0, seed=1)
    memory.extend(range(4))
    memory.update_priorities([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0])
    # 20k draws: each frequency's std is <= 0.0035, so 0.02 is ~6 sigma.
    np.testing.assert_allclose(frequencies(memory), [0.1, 0.2, 0.3, 0.4], atol=0.02)


def test_prioritized_alpha_and_eps_shape_the_distribution():
    memory = PrioritizedReplay(maxlen=3, minlen=1, alpha=0.5, eps=1.0, seed=2)
    memory.extend(range(3))
    # (p + eps) ** alpha = 1, 2, 3 -> frequencies 1/6, 2/6, 3/6.
    memory.update_priorities([0, 1, 2], [0.0, 3.0, 8.0])
    np.testing.assert_allclose(frequencies(memory), [1 / 6, 2 / 6, 3 / 6], atol=0.02)


def test_prioritized_zero_priority_never_sampled_and_new_item_gets_max():
    memory = PrioritizedReplay(maxlen=3, minlen=1, alpha=1.0, eps=0.0, seed=3)
    memory.extend([0, 1])
    memory.update_priorities([0, 1], [0.0, 5.0])
    memory.append(2)  # must get the current max, 5.0
    np.testing.assert_allclose(frequencies(memory), [0.0, 0.5, 0.5], atol=0.02)


def test_prioritized_new_item_max_excludes_evicted_item():
    memory = PrioritizedReplay(maxlen=2, minlen=1, alpha=1.0, eps=0.0, seed=4)
    memory.extend([0, 1])
    memory.update_priorities([0, 1], [9.0, 1.0])
    memory.append(2)  # evicts item 0 (priority 9): the current max is now 1.0
    np.testing.assert_allclose(frequencies(memory), [0.0, 0.5, 0.5], atol=0.02)


def test_prioritized_importance_weights_match_hand_computation():
    memory = PrioritizedReplay(maxlen=4, minlen=1, alpha=1.0, beta=0.5, eps=0.0, seed=5)
    memory.extend(range(4))
    memory.update_priorities([0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0])
    sample = memory.sample(200)
    assert set(sample.items) == {0, 1, 2, 3}  # so the batch max weight is item 0's
    # P = p / 10, N = 4: w = (0.4 p) ** -0.5, divided by item 0's (0.4) ** -0.5 -> p ** -0.5.
    expected = {0: 1.0, 1: 2 ** -0.5, 2: 3 ** -0.5, 3: 0.5}
    for item, weight in zip(sample.items, sample.weights):
        assert weight == pytest.approx(expected[item], rel=1e-6)


def test_prioritized_beta_zero_gives_unit_weights():
    memory = PrioritizedReplay(maxlen=4, minlen=1, beta=0.0, seed=6)
    memory.extend(range(4))
    memory.update_priorities([0, 1], [10.0, 0.1])
    np.testing.assert_array_equal(memory.sample(32).weights, np.ones(32, np.float32))


def test_prioritized_stale_keys_are_ignored():
    memory = PrioritizedReplay(maxlen=2, minlen=1, alpha=1.0, eps=0.0, seed=7)
    memory.extend([0, 1, 2])  # key 0 evicted; its slot now holds key 2
    memory.update_priorities([0], [0.0])  # would zero item 2 if not ignored
    np.testing.assert_allclose(frequencies(memory), [0.0, 0.5, 0.5], atol=0.02)
    memory.update_priorities([0, 2, 1], [100.0, 3.0, 1.0])  # mixed stale and live
    np.testing.assert_allclose(frequencies(memory), [0.0, 0.25, 0.75], atol=0.02)


def test_prioritized_all_zero_priorities_fall_back_to_uniform():
    memory = PrioritizedReplay(maxlen=2, minlen=1, alpha=1.0, eps=0.0, seed=8)
    memory.extend([0, 1])
    memory.update_priorities([0, 1], [0.0, 0.0])
    sample = memory.sample(2000)
    assert set(sample.items) == {0, 1}
    np.testing.assert_array_equal(sample.weights, np.ones(2000, np.float32))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_prioritized_rejects_bad_priorities(bad):
    memory = PrioritizedReplay(maxlen=2, minlen=1)
    memory.extend([0, 1])
    with pytest.raises(ValueError, match=f"finite and >= 0, got {bad!r}"):
        memory.update_priorities([0, 1], [1.0, bad])


def test_prioritized_rejects_unissued_keys_and_length_mismatch():
    memory = PrioritizedReplay(maxlen=2, minlen=1)
    memory.extend([0, 1])
    with pytest.raises(ValueError, match="key 2 was never issued"):
        memory.update_priorities([2], [1.0])
    with pytest.raises(ValueError, match="key -1 was never issued"):
        memory.update_priorities([-1], [1.0])
    with pytest.raises(ValueError, match="2 keys but 1 priorities"):
        memory.update_priorities([0, 1], [1.0])


@pytest.mark.parametrize("kwargs, message", [
    (dict(maxlen=0), r"maxlen must be an int in \[1, 10000000\], got 0"),
    (dict(maxlen=2.5), r"maxlen must be an int in \[1, 10000000\], got 2.5"),
    (dict(maxlen=True), r"maxlen must be an int in \[1, 10000000\], got True"),
    (dict(maxlen="10"), r"maxlen must be an int in \[1, 10000000\], got '10'"),
    (dict(maxlen=10, minlen=-1), r"minlen must be an int in \[0, 10\], got -1"),
    (dict(maxlen=10, minlen=11), r"minlen must be an int in \[0, 10\], got 11"),
    (dict(maxlen=10_000_001), r"maxlen must be an int in \[1, 10000000\], got 10000001"),
    (dict(seed=-1), "seed must be an int >= 0, got -1"),
])
@pytest.mark.parametrize("cls", BOTH)
def test_constructor_errors_name_value_and_range(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=-0.1), "alpha must be a finite number >= 0.0, got -0.1"),
    (dict(alpha=float("nan")), "alpha must be a finite number >= 0.0, got nan"),
    (dict(beta=-0.1), r"beta must be a number in \[0.0, 1.0\], got -0.1"),
    (dict(beta=1.1), r"beta must be a number in \[0.0, 1.0\], got 1.1"),
    (dict(eps=-1e-6), "eps must be a finite number >= 0.0, got -1e-06"),
])
def test_prioritized_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PrioritizedReplay(**kwargs)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0])
@pytest.mark.parametrize("cls", BOTH)
def test_bad_batch_size(cls, batch_size):
    memory = cls(maxlen=2, minlen=1)
    memory.append(0)
    with pytest.raises(ValueError, match=f"batch_size must be an int >= 1, got {batch_size}"):
        memory.sample(batch_size)


def test_make_replay():
    assert make_replay(None) is None
    uniform = make_replay("uniform", maxlen=5, minlen=2, seed=0)
    assert type(uniform) is UniformReplay and (uniform.maxlen, uniform.minlen) == (5, 2)
    prioritized = make_replay("prioritized", maxlen=5, minlen=1, alpha=0.7, beta=1.0)
    assert type(prioritized) is PrioritizedReplay and prioritized.alpha == 0.7
    with pytest.raises(ValueError, match=r"'ring'.*'uniform', 'prioritized'"):
        make_replay("ring")
    with pytest.raises(ValueError, match=r"'alpha'.*valid arguments are maxlen, minlen, seed"):
        make_replay("uniform", alpha=0.5)


@pytest.mark.parametrize("cls", BOTH)
def test_concurrent_use_keeps_keys_unique(cls):
    memory = cls(maxlen=500, minlen=1, seed=0)
    memory.append(-1)
    keys, errors = [], []

    def worker(start):
        try:
            for i in range(start, start + 200):
                keys.append(memory.append(i))
                sample = memory.sample(4)
                memory.update_priorities(sample.keys, np.ones(4))
        except Exception as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(1000 * t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(keys) == list(range(1, 801))
    assert len(memory) == 500


def test_replay_package_does_not_import_tensorflow():
    code = "import sys, drlbox.replay; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"

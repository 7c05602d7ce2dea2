"""Tests for drlbox.replay.sum_tree.SumTree."""
import numpy as np
import pytest

from drlbox.replay.sum_tree import SumTree


def make_tree(priorities):
    """A tree with exactly ``priorities`` as its leaves."""
    tree = SumTree(len(priorities))
    tree.update_many(np.arange(len(priorities)), priorities)
    return tree


def test_new_tree_is_all_zero():
    tree = SumTree(5)
    assert tree.capacity == 5
    assert tree.total == 0.0
    assert tree.max_priority == 0.0
    assert tree.min_priority == 0.0
    np.testing.assert_array_equal(tree.get(np.arange(5)), np.zeros(5))


@pytest.mark.parametrize("capacity", [1, 2, 5, 7, 8, 9])
def test_total_tracks_updates_and_overwrites(capacity):
    tree = SumTree(capacity)
    for i in range(capacity):
        tree.update(i, i + 1.0)
    assert tree.total == pytest.approx(capacity * (capacity + 1) / 2)
    tree.update(capacity - 1, 0.5)  # overwrite, not add
    assert tree.total == pytest.approx(capacity * (capacity + 1) / 2 - capacity + 0.5)
    assert tree.get(capacity - 1) == 0.5


def test_find_first_leaf_and_boundaries():
    tree = make_tree([1.0, 2.0, 3.0, 4.0, 5.0])
    # Leaf i owns [cumsum_before_i, cumsum_before_i + p_i).
    np.testing.assert_array_equal(tree.find([0.0, 0.999]), [0, 0])
    # A value exactly at a boundary belongs to the next leaf.
    np.testing.assert_array_equal(tree.find([1.0, 3.0, 6.0, 10.0]), [1, 2, 3, 4])
    np.testing.assert_array_equal(tree.find([2.999, 5.999, 9.999]), [1, 2, 3])


def test_find_last_leaf_including_total_itself():
    tree = make_tree([1.0, 2.0, 3.0, 4.0, 5.0])
    last = np.nextafter(tree.total, 0.0)
    np.testing.assert_array_equal(tree.find([14.5, last, tree.total]), [4, 4, 4])


def test_find_skips_zero_leaves_at_edges_and_boundaries():
    tree = make_tree([0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0])
    # 0.0 is the boundary of the empty leaf 0; 1.0 the boundary of empty leaves 2 and 3.
    np.testing.assert_array_equal(tree.find([0.0, 1.0, 3.0 - 1e-12, 3.0]), [1, 4, 4, 4])
    values = np.random.default_rng(0).random(10_000) * tree.total
    found = tree.find(values)
    assert set(np.unique(found)) == {1, 4}


def test_find_never_lands_on_zero_leaf_under_rounding():
    # Tiny priorities next to big ones make u * total round at the subtree edges.
    priorities = np.zeros(64)
    priorities[[3, 17, 40]] = [1e-12, 1e12, 1e-12]
    tree = make_tree(priorities)
    edges = np.array([0.0, 1e-12, np.nextafter(1e-12, 0), tree.total,
                      np.nextafter(tree.total, 0)])
    values = np.concatenate([edges, np.random.default_rng(1).random(5000) * tree.total])
    assert set(np.unique(tree.find(values))) <= {3, 17, 40}


def test_find_matches_searchsorted_on_random_trees():
    rng = np.random.default_rng(2)
    for capacity in [1, 3, 16, 33, 100]:
        priorities = rng.random(capacity) * (rng.random(capacity) > 0.3)
        if priorities.sum() == 0:
            priorities[0] = 1.0
        tree = make_tree(priorities)
        assert tree.total == pytest.approx(priorities.sum())
        values = rng.random(1000) * tree.total
        expected = np.searchsorted(np.cumsum(priorities), values, side="right")
        np.testing.assert_array_equal(tree.find(values), expected)


def test_find_is_vectorised_and_keeps_shape():
    tree = make_tree([1.0, 1.0, 1.0, 1.0])
    found = tree.find(np.array([[0.5, 1.5], [2.5, 3.5]]))
    assert found.shape == (2, 2)
    np.testing.assert_array_equal(found, [[0, 1], [2, 3]])


def test_find_rejects_empty_tree_and_out_of_range_values():
    with pytest.raises(ValueError, match="total priority is 0"):
        SumTree(4).find([0.0])
    tree = make_tree([1.0, 2.0])
    with pytest.raises(ValueError, match="-0.5"):
        tree.find([0.0, -0.5])
    with pytest.raises(ValueError, match="3.5"):
        tree.find([3.5])
    with pytest.raises(ValueError, match="nan"):
        tree.find([np.nan])


def test_update_many_last_duplicate_wins_and_matches_sequential():
    tree = SumTree(6)
    tree.update_many([1, 4, 1, 5], [9.0, 2.0, 3.0, 0.5])
    np.testing.assert_array_equal(tree.get([0, 1, 2, 3, 4, 5]), [0, 3.0, 0, 0, 2.0, 0.5])
    sequential = SumTree(6)
    for i, p in [(1, 9.0), (4, 2.0), (1, 3.0), (5, 0.5)]:
        sequential.update(i, p)
    assert sequential.total == tree.total == 5.5
    tree.update_many([], [])  # no-op
    assert tree.total == 5.5


def test_scalar_and_vector_updates_agree():
    rng = np.random.default_rng(3)
    scalar, vector = SumTree(13), SumTree(13)
    for _ in range(20):
        indices = rng.integers(0, 13, size=5)
        priorities = rng.random(5) * (rng.random(5) > 0.4)
        for i, p in zip(indices, priorities):
            scalar.update(int(i), float(p))
        vector.update_many(indices, priorities)
        for attr in ("total", "max_priority", "min_priority"):
            assert getattr(scalar, attr) == getattr(vector, attr)
        np.testing.assert_array_equal(scalar.get(np.arange(13)), vector.get(np.arange(13)))


def test_max_and_min_over_nonzero_leaves():
    tree = make_tree([0.0, 3.0, 0.5, 7.0, 0.0])
    assert tree.max_priority == 7.0
    assert tree.min_priority == 0.5
    tree.update_many([3, 2], [0.0, 0.0])
    assert tree.max_priority == 3.0
    assert tree.min_priority == 3.0
    tree.update(1, 0.0)
    assert tree.max_priority == tree.min_priority == tree.total == 0.0


@pytest.mark.parametrize("bad", [-1.0, -1e-300, float("nan"), float("inf")])
def test_rejects_bad_priorities_naming_them(bad):
    tree = make_tree([1.0, 2.0])
    with pytest.raises(ValueError, match=repr(bad).strip("'")):
        tree.update(0, bad)
    with pytest.raises(ValueError, match=repr(bad).strip("'")):
        tree.update_many([0, 1], [1.0, bad])
    assert tree.total == 3.0  # nothing was written


def test_rejects_bad_indices_and_shapes():
    tree = SumTree(3)
    with pytest.raises(IndexError, match="3"):
        tree.update(3, 1.0)
    with pytest.raises(IndexError, match="-1"):
        tree.get([-1])
    with pytest.raises(ValueError, match="2 indices but 1 priorities"):
        tree.update_many([0, 1], [1.0])


@pytest.mark.parametrize("capacity", [0, -3, 2.5, True, "8"])
def test_rejects_bad_capacity(capacity):
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        SumTree(capacity)

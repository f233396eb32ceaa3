"""Tests of the attribution pass on misclassified inputs and of the per-step group norms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import beta_optax
from beta_optax.training import attribution


class _Linear(nn.Module):
    """A linear classifier on flattened images, called like the ResNet."""

    @nn.compact
    def __call__(self, images, train):
        del train
        return nn.Dense(3, name="head")(images.reshape(images.shape[0], -1))


def _planted():
    """Six 1x1x3 images; the classifier predicts the channel with the largest value."""
    model = _Linear()
    params = {"head": {"kernel": jnp.eye(3), "bias": jnp.zeros(3)}}
    images = np.array(
        [[200, 10, 10], [10, 200, 10], [10, 10, 200], [200, 10, 10], [10, 200, 10], [10, 10, 200]],
        np.uint8,
    ).reshape(6, 1, 1, 3)
    # Examples 3 and 4 are labelled against their largest channel: the planted errors.
    labels = np.array([0, 1, 2, 2, 0, 2], np.int32)
    return model, params, images, labels


def _attribute(model, params, images, labels, batch_size=4):
    indices, weights = attribution.attribution_indices(len(labels), 100, batch_size, seed=0)
    mean, std = jnp.zeros(3), jnp.ones(3)
    return attribution.misclassified_gradients(
        params,
        {},
        jnp.asarray(images),
        jnp.asarray(labels),
        indices,
        weights,
        mean,
        std,
        model=model,
    )


def _summed_loss_grads(model, params, images, labels):
    def loss(params):
        logits = model.apply({"params": params}, images.astype(jnp.float32) / 255.0, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()

    return jax.grad(loss)(params)


def test_misclassified_gradients_planted_errors():
    model, params, images, labels = _planted()
    wrong_grads, all_grads, wrong_count, count = _attribute(model, params, images, labels)
    expected_wrong = _summed_loss_grads(model, params, images[3:5], labels[3:5])
    expected_all = _summed_loss_grads(model, params, images, labels)
    assert float(wrong_count) == 2.0
    assert float(count) == 6.0
    for actual, expected in ((wrong_grads, expected_wrong), (all_grads, expected_all)):
        for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_misclassified_gradients_ignore_correct_inputs():
    model, params, images, labels = _planted()
    changed = images.copy()
    # Changing the correctly classified inputs (keeping them correct) leaves the result alone.
    changed[[0, 1, 2, 5]] = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 255]])[
        :, None, None, :
    ]
    first, *_ = _attribute(model, params, images, labels)
    second, *_ = _attribute(model, params, changed, labels)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_misclassified_gradients_zero_without_errors():
    model, params, images, _ = _planted()
    labels = np.array([0, 1, 2, 0, 1, 2], np.int32)
    wrong_grads, _, wrong_count, _ = _attribute(model, params, images, labels)
    assert float(wrong_count) == 0.0
    assert all(float(jnp.abs(leaf).max()) == 0.0 for leaf in jax.tree.leaves(wrong_grads))


def test_attribution_indices_subset_and_padding():
    indices, weights = attribution.attribution_indices(1000, 90, 40, seed=3)
    assert indices.shape == weights.shape == (3, 40)
    real = indices.reshape(-1)[weights.reshape(-1) > 0]
    assert len(real) == 90
    assert len(set(real.tolist())) == 90
    assert weights.sum() == 90


def test_monitor_group_norms_records_and_passes_updates():
    params = {"stem_conv": {"kernel": jnp.ones((2, 2))}, "head": {"bias": jnp.ones(3)}}
    grads = {"stem_conv": {"kernel": jnp.full((2, 2), 2.0)}, "head": {"bias": jnp.ones(3)}}
    groups = attribution.group_prefixes(params)
    plain = optax.sgd(0.1)
    monitored = attribution.monitor_group_norms(plain, groups)
    updates, state = jax.jit(monitored.update)(grads, monitored.init(params), params)
    expected, _ = plain.update(grads, plain.init(params), params)
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert set(state.grad_norms) == {"stem_conv", "head"}
    assert float(state.grad_norms["stem_conv"]) == pytest.approx(4.0)
    assert float(state.update_norms["head"]) == pytest.approx(0.1 * np.sqrt(3))
    metrics = attribution.group_stats_metrics(state)
    assert metrics["stats_stem_conv_grad_norm"] == pytest.approx(4.0)


def test_group_prefixes_network_order():
    paths = ["head/kernel", "stage1_block1/conv1/kernel", "stem_conv/kernel", "stage1_block2/x"]
    prefixes = attribution.group_prefixes(paths)
    assert list(prefixes) == ["stem_conv", "stage1", "head"]
    assert prefixes["stage1"] == ["stage1_block1", "stage1_block2"]


def test_history_entry_of_attribution_normalizes():
    model, params, images, labels = _planted()
    wrong_grads, all_grads, *_ = _attribute(model, params, images, labels)
    entry = beta_optax.history_entry(7, wrong_grads, total_norm=attribution.global_norm(all_grads))
    assert entry["step"] == 7
    assert entry["total_norm"] == pytest.approx(float(optax.tree.norm(all_grads)), rel=1e-6)

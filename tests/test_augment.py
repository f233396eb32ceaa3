"""Tests for beta_optax.training.augment: crops, flips, normalization and batch order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beta_optax.training import augment

SHAPE = (64, 8, 6, 3)


def make_images(shape=SHAPE, seed=0):
    # Values start at 1 so that the zero padding of a crop is distinguishable from pixels.
    return jnp.asarray(np.random.default_rng(seed).integers(1, 256, shape, dtype=np.uint8))


def test_normalize_values():
    images = make_images()
    mean = np.array([0.1, 0.5, 0.9], np.float32)
    std = np.array([0.2, 0.3, 0.4], np.float32)

    normalized = augment.normalize(images, mean, std)

    expected = (np.asarray(images, np.float64) / 255.0 - mean) / std
    assert normalized.dtype == jnp.float32
    np.testing.assert_allclose(normalized, expected, rtol=1e-5, atol=1e-6)


def test_random_crop_padding_zero_identity():
    images = make_images()

    cropped = augment.random_crop(images, jax.random.key(0), padding=0)

    np.testing.assert_array_equal(cropped, images)


def test_random_crop_is_shifted_window():
    images = make_images()
    padding = 2

    cropped = np.asarray(augment.random_crop(images, jax.random.key(1), padding=padding))

    assert cropped.shape == images.shape
    assert cropped.dtype == images.dtype
    padded = np.pad(np.asarray(images), ((0, 0), (padding,) * 2, (padding,) * 2, (0, 0)))
    height, width = SHAPE[1:3]
    offsets = set()
    for index in range(SHAPE[0]):
        windows = [
            (top, left)
            for top in range(2 * padding + 1)
            for left in range(2 * padding + 1)
            if np.array_equal(
                padded[index, top : top + height, left : left + width], cropped[index]
            )
        ]
        assert len(windows) == 1, f"example {index} matches windows {windows}"
        offsets.add(windows[0])
    # 64 examples over 25 offsets: many distinct offsets show the crops are per example.
    assert len(offsets) > 10


def test_random_crop_invalid_padding():
    with pytest.raises(ValueError, match="`padding`"):
        augment.random_crop(make_images(), jax.random.key(0), padding=-1)


def test_random_flip_flips_about_half():
    images = make_images(shape=(400, 4, 5, 1))

    flipped = np.asarray(augment.random_flip(images, jax.random.key(2)))

    mirrored = np.asarray(images)[:, :, ::-1]
    is_flipped = np.all(flipped == mirrored, axis=(1, 2, 3))
    is_kept = np.all(flipped == np.asarray(images), axis=(1, 2, 3))
    assert np.all(is_flipped ^ is_kept)
    # Binomial(400, 1/2) has a standard deviation of 10, so 200 +- 50 fails with odds ~1e-6.
    assert 150 <= is_flipped.sum() <= 250


def test_random_flip_own_inverse():
    images = make_images()
    key = jax.random.key(3)

    twice = augment.random_flip(augment.random_flip(images, key), key)

    np.testing.assert_array_equal(twice, images)


@pytest.mark.parametrize(
    ("padding", "flip"), [(4, True), (0, True), (4, False)], ids=["crop_flip", "flip", "crop"]
)
def test_augment_batch_shape_dtype_determinism(padding, flip):
    images = make_images()
    mean = jnp.full((3,), 0.5)
    std = jnp.full((3,), 0.25)

    run = jax.jit(
        lambda images, key: augment.augment_batch(
            images, key, mean, std, padding=padding, flip=flip
        )
    )
    first = run(images, jax.random.key(4))
    second = run(images, jax.random.key(4))
    other = run(images, jax.random.key(5))

    assert first.shape == images.shape
    assert first.dtype == jnp.float32
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_augment_batch_no_augmentation_is_normalize():
    images = make_images()
    mean = jnp.array([0.4, 0.5, 0.6])
    std = jnp.array([0.2, 0.2, 0.3])

    augmented = augment.augment_batch(images, jax.random.key(0), mean, std, padding=0, flip=False)

    np.testing.assert_array_equal(augmented, augment.normalize(images, mean, std))


def test_augment_batch_padding_becomes_black_pixel():
    images = make_images()
    mean = jnp.array([0.4, 0.5, 0.6])
    std = jnp.array([0.2, 0.2, 0.3])

    augmented = augment.augment_batch(images, jax.random.key(6), mean, std, padding=3, flip=False)

    black = np.asarray(-mean / std)
    is_black = np.all(np.isclose(np.asarray(augmented), black), axis=-1)
    assert is_black.any()


def test_epoch_permutation_is_permutation_per_epoch():
    key = jax.random.key(7)

    first = np.asarray(augment.epoch_permutation(key, 0, 50))
    again = np.asarray(augment.epoch_permutation(key, 0, 50))
    second = np.asarray(augment.epoch_permutation(key, 1, 50))

    assert sorted(first.tolist()) == list(range(50))
    assert sorted(second.tolist()) == list(range(50))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)


def test_batch_indices_cover_epoch_without_repeats():
    key = jax.random.key(8)
    num_examples, batch_size = 50, 8
    steps = augment.steps_per_epoch(num_examples, batch_size)

    batch_at = jax.jit(lambda step: augment.batch_indices(key, num_examples, batch_size, step))
    epoch = np.concatenate([np.asarray(batch_at(step)) for step in range(steps)])

    assert steps == 6
    assert len(set(epoch.tolist())) == steps * batch_size
    np.testing.assert_array_equal(
        epoch, np.asarray(augment.epoch_permutation(key, 0, num_examples))[: steps * batch_size]
    )


def test_batch_indices_depend_on_step_only():
    key = jax.random.key(9)
    num_examples, batch_size = 50, 8

    batch_at = jax.jit(lambda step: augment.batch_indices(key, num_examples, batch_size, step))
    resumed = [np.asarray(batch_at(step)) for step in (13, 6, 13)]

    np.testing.assert_array_equal(resumed[0], resumed[2])
    second_epoch_start = np.asarray(augment.epoch_permutation(key, 1, num_examples))[:batch_size]
    np.testing.assert_array_equal(resumed[1], second_epoch_start)


@pytest.mark.parametrize("batch_size", [0, 51], ids=["zero", "above_examples"])
def test_batch_indices_invalid_batch_size(batch_size):
    with pytest.raises(ValueError, match="`batch_size`"):
        augment.batch_indices(jax.random.key(0), 50, batch_size, 0)

"""Batch selection and augmentation as pure jnp functions, for use inside a jit-compiled step.

The whole dataset sits on the device as uint8, so the train step gathers its own batch
(`batch_indices`) and augments it (`augment_batch`) without a transfer from the host. Every function
is deterministic for a given key: the same seed gives the same batches and the same crops,
also in a run resumed from a checkpoint.
"""

import jax
import jax.numpy as jnp


def normalize(images: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Scale uint8 images to [0, 1] and standardize each channel.

    Args:
        images: uint8 array of shape (batch, height, width, channels).
        mean: per-channel mean in [0, 1] units, shape (channels,).
        std: per-channel standard deviation in [0, 1] units, shape (channels,).

    Returns:
        float32 array, `(images / 255 - mean) / std`.
    """
    scaled = jnp.asarray(images, jnp.float32) / 255.0
    return (scaled - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def random_crop(images: jax.Array, key: jax.Array, padding: int = 4) -> jax.Array:
    """Pad each image with zeros and crop it back to its size at a random offset.

    Each example gets its own offset in [0, 2 * padding] along height and width, drawn from
    `key`. The crop is one vectorised gather, with no Python loop over examples.

    Args:
        images: array of shape (batch, height, width, channels), any dtype.
        key: PRNG key.
        padding: zero border added on each side, a Python int >= 0. With 0 the images are
            returned unchanged.

    Returns:
        Array of the same shape and dtype as `images`.
    """
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"`padding` must be a Python int >= 0, got padding={padding!r}.")
    if padding == 0:
        return images

    batch, height, width, channels = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (batch, 2), 0, 2 * padding + 1)

    def crop_one(image, offset):
        start = (offset[0], offset[1], 0)
        return jax.lax.dynamic_slice(image, start, (height, width, channels))

    return jax.vmap(crop_one)(padded, offsets)


def random_flip(images: jax.Array, key: jax.Array) -> jax.Array:
    """Mirror each image left-right with probability 1/2, independently per example.

    Args:
        images: array of shape (batch, height, width, channels), any dtype.
        key: PRNG key.

    Returns:
        Array of the same shape and dtype as `images`.
    """
    flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def augment_batch(
    images: jax.Array,
    key: jax.Array,
    mean: jax.Array,
    std: jax.Array,
    *,
    padding: int = 4,
    flip: bool = True,
) -> jax.Array:
    """Randomly crop and flip a uint8 batch, then normalize it to float32.

    Crop and flip run on the uint8 values, before the conversion, so they move a quarter of
    the bytes. The zero padding of the crop therefore becomes `-mean / std` after
    normalization, the value of a black pixel.

    Args:
        images: uint8 array of shape (batch, height, width, channels).
        key: PRNG key, split into independent keys for the crop and the flip.
        mean: per-channel mean in [0, 1] units, shape (channels,).
        std: per-channel standard deviation in [0, 1] units, shape (channels,).
        padding: border of the random crop. 0 turns cropping off.
        flip: whether to mirror half of the images at random.

    Returns:
        float32 array of the same shape as `images`.
    """
    crop_key, flip_key = jax.random.split(key)
    images = random_crop(images, crop_key, padding)
    if flip:
        images = random_flip(images, flip_key)
    return normalize(images, mean, std)


def epoch_permutation(key: jax.Array, epoch: jax.Array | int, num_examples: int) -> jax.Array:
    """Return the order in which one epoch visits the examples.

    The permutation depends only on `key` and `epoch`, so a run restarted at any step can
    rebuild it. `epoch` may be a traced value.

    Args:
        key: PRNG key of the data order, the same for the whole run.
        epoch: epoch number, from 0.
        num_examples: size of the train split, a Python int.

    Returns:
        int32 array of shape (num_examples,), a permutation of `range(num_examples)`.
    """
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Return the number of full batches in an epoch, which drops the incomplete last batch."""
    if not 0 < batch_size <= num_examples:
        raise ValueError(
            f"`batch_size` must be in [1, num_examples={num_examples}], got "
            f"batch_size={batch_size}."
        )
    return num_examples // batch_size


def batch_indices(
    key: jax.Array, num_examples: int, batch_size: int, step: jax.Array | int
) -> jax.Array:
    """Return the example indices of the batch used at a train step.

    Step `s` takes batch `s % steps_per_epoch` of the permutation of epoch
    `s // steps_per_epoch` (see `epoch_permutation`), so the batch is a function of the key
    and the step alone. Within an epoch no example repeats, and the examples after the last
    full batch are skipped for that epoch only.

    The permutation is recomputed at every step, a sort of `num_examples` keys, which is
    cheap next to the train step and keeps the step free of any host-side state.

    Args:
        key: PRNG key of the data order, the same for the whole run.
        num_examples: size of the train split, a Python int.
        batch_size: examples per batch, a Python int in [1, num_examples].
        step: train step, from 0, possibly a traced int32.

    Returns:
        int32 array of shape (batch_size,), to index the images and labels with.
    """
    batches = steps_per_epoch(num_examples, batch_size)
    epoch, position = jnp.divmod(jnp.asarray(step, jnp.int32), batches)
    order = epoch_permutation(key, epoch, num_examples)
    return jax.lax.dynamic_slice(order, (position * batch_size,), (batch_size,))

"""Independent NumPy implementations of the schedules and of heavy-ball SGD, for comparisons."""

import numpy as np


def warmup_cosine(step, peak, warmup_steps, decay_steps, end=0.0):
    """Linear warmup from 0 to `peak`, then cosine decay to `end` at `decay_steps` (held after)."""
    step = np.float64(step)
    if step < warmup_steps:
        return peak * step / warmup_steps
    progress = min(step - warmup_steps, decay_steps - warmup_steps) / (decay_steps - warmup_steps)
    return end + (peak - end) * 0.5 * (1.0 + np.cos(np.pi * progress))


def piecewise(step, init_value, boundaries_and_scales):
    value = init_value
    for boundary, scale in sorted(boundaries_and_scales.items()):
        if step >= boundary:
            value *= scale
    return value


def critical_momentum(learning_rate, curvature=1.0, form="paper", low=0.0, high=0.99):
    """Float32 critical momentum computed with NumPy."""
    step_size = np.float32(learning_rate) * np.float32(curvature)
    root = np.sqrt(np.maximum(step_size, np.float32(0)))
    if form == "paper":
        momentum = np.float32(1) - np.float32(2) * root
    else:
        momentum = np.square(np.float32(1) - np.minimum(root, np.float32(1)))
    return np.clip(momentum, np.float32(low), np.float32(high)).astype(np.float32)


def heavy_ball(params, grads_sequence, learning_rates, momenta, nesterov=False):
    """Runs `trace = g + mu * trace; params -= lr * (trace or g + mu * trace)` in float32.

    Returns the parameters after every step, shape (steps, *params.shape).
    """
    params = np.asarray(params, np.float32).copy()
    trace = np.zeros_like(params)
    history = []
    for grads, learning_rate, momentum in zip(grads_sequence, learning_rates, momenta, strict=True):
        momentum = np.float32(momentum)
        trace = grads + momentum * trace
        direction = grads + momentum * trace if nesterov else trace
        params = params - np.float32(learning_rate) * direction
        history.append(params.copy())
    return np.stack(history)

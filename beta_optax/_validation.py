"""Construction-time checks shared by the core transforms.

Only concrete Python and NumPy numbers are checked. `optax.inject_hyperparams` passes every numeric
argument as a JAX array, often a tracer, and those cannot be compared on the host, so the traced
math clamps them instead (see `_physics.py`).
"""

import math
import numbers
import sys

import jax
import numpy as np

FORMS = ("paper", "exact")


def is_concrete_number(value) -> bool:
    """Returns whether `value` is a Python or NumPy number that can be checked on the host."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Number):
        return True
    return isinstance(value, np.ndarray | np.generic)


def external_stacklevel() -> int:
    """Returns the `warnings.warn` stacklevel of the first caller outside beta_optax.

    The core's public functions call each other at different depths, and a warning should point
    at the user's line, whichever entry point it came through.
    """
    level = 1
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("beta_optax"):
        frame = frame.f_back
        level += 1
    return level


def check_scalar_shape(name: str, value) -> None:
    """Raises ValueError when an array-like hyperparameter is not a scalar."""
    if callable(value):
        return
    shape = np.shape(value) if not isinstance(value, jax.Array) else value.shape
    if shape != ():
        raise ValueError(
            f"`{name}` must be a scalar or a schedule (a function of the step count), "
            f"got an array of shape {shape}. Pass one value, or an optax schedule."
        )


def check_learning_rate(value, where: str = "") -> None:
    """Raises ValueError for a negative, NaN, infinite or non-scalar concrete learning rate.

    Raises TypeError for a value that is neither a number, an array nor a schedule. `where`
    names the origin of the value in the message, such as " at step 0 of the schedule".
    """
    if not (
        callable(value) or isinstance(value, numbers.Number | np.ndarray | np.generic | jax.Array)
    ):
        raise TypeError(
            f"`learning_rate` must be a number, a scalar array or a schedule (a function of the "
            f"step count), got {type(value).__name__} {value!r}."
        )
    check_scalar_shape("learning_rate", value)
    if callable(value) or not is_concrete_number(value):
        return
    if isinstance(value, np.ndarray | np.generic) and not np.issubdtype(value.dtype, np.number):
        raise ValueError(f"`learning_rate` must be a number, got dtype {value.dtype}.")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(
            f"`learning_rate` must be a finite number >= 0, got {number!r}{where}. "
            "Check the schedule's init_value/peak_value or the value passed in."
        )


def check_curvature(value) -> None:
    """Raises ValueError for a concrete curvature that is not a finite number > 0."""
    check_scalar_shape("curvature", value)
    if not is_concrete_number(value):
        return
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(
            f"`curvature` must be a finite number > 0, got {number!r}. It is the Hessian "
            "eigenvalue h that the momentum is critically damped for; 1.0 gives the paper's form."
        )


def check_momentum_bounds(min_momentum, max_momentum) -> None:
    """Raises ValueError unless 0 <= min_momentum <= max_momentum < 1 for concrete bounds."""
    for name, value in (("min_momentum", min_momentum), ("max_momentum", max_momentum)):
        check_scalar_shape(name, value)
        if not is_concrete_number(value):
            continue
        number = float(value)
        if not (0.0 <= number < 1.0):
            raise ValueError(
                f"`{name}` must lie in [0, 1), got {number!r}. A momentum of 1 or more never "
                "forgets a gradient and diverges; a negative one flips the sign of the trace."
            )
    if is_concrete_number(min_momentum) and is_concrete_number(max_momentum):
        if float(min_momentum) > float(max_momentum):
            raise ValueError(
                f"`min_momentum` ({float(min_momentum)!r}) must not exceed `max_momentum` "
                f"({float(max_momentum)!r}). Swap them or widen the range."
            )


def check_form(form) -> None:
    """Raises ValueError for an unknown critical-damping form."""
    if form not in FORMS:
        raise ValueError(f"`form` must be one of {FORMS}, got {form!r}.")


def check_momentum_value(name: str, value) -> None:
    """Raises ValueError unless a concrete momentum lies in [0, 1)."""
    check_scalar_shape(name, value)
    if not is_concrete_number(value):
        return
    number = float(value)
    if not (0.0 <= number < 1.0):
        raise ValueError(
            f"`{name}` must lie in [0, 1), got {number!r}. Typical values are 0.9 to 0.99; a "
            "momentum of 1 or more makes the trace grow without bound."
        )

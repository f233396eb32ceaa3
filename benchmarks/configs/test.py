"""Test preset: the tiny ResNet on a tiny random dataset, a few steps, for the CLI tests.

Accuracy stays near chance, so the targets only exercise the reporting.
"""

from beta_optax.training.config import TrainConfig

WORKERS = 1


def get_config() -> TrainConfig:
    """Return the preset; every field not set here keeps the TrainConfig default."""
    return TrainConfig(
        dataset="synthetic",
        model="resnet_tiny",
        width_multiplier=1 / 16,
        batch_size=32,
        num_steps=8,
        log_every_steps=2,
        eval_every_steps=4,
        eval_batch_size=64,
        checkpoint_every_steps=4,
        targets=(0.1, 0.5),
    )

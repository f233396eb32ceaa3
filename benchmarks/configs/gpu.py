"""GPU preset: full-width ResNet-18 on CIFAR-10, targets 90% and 95% test accuracy.

100 epochs at batch 256 with the cosine schedule; 95% is the usual ceiling of a ResNet-18 with
crop and flip only, so some methods may not reach it.
"""

from beta_optax.training.config import TrainConfig

# Runs in this process, one after another, on every local accelerator.
WORKERS = 1


def get_config() -> TrainConfig:
    """Return the preset; every field not set here keeps the TrainConfig default."""
    return TrainConfig(
        dataset="cifar10",
        batch_size=256,
        # Linear scaling of 0.1 at batch 128 to batch 256.
        sgd_peak_learning_rate=0.2,
        num_epochs=100.0,
        # About one evaluation per epoch (195 steps at batch 256).
        eval_every_steps=195,
        log_every_steps=50,
        checkpoint_every_steps=2000,
        targets=(0.90, 0.95),
    )

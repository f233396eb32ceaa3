"""CPU preset: ResNet-18 at 1/8 width on Fashion-MNIST, sized for 2 CPU cores.

Five methods, one seed, two workers pinned one per core. Measured on 2 cores of an Intel Xeon
shared with other jobs: a worker trains 2 to 4 steps/s at batch 128 and one evaluation of the
10,000 test images takes 4 to 11 s, so the five runs take about 12 minutes on an idle machine
(an estimate from those rates). At 1/4 width a worker is about 2.5 times slower.

Targets 80%, 84% and 86% test accuracy: with crop and flip, the methods end 1.5 epochs near 86%
(85.7% to 86.6% in a first run of this preset), so 86% separates them at the end and the lower
targets time the earlier phase. Evaluations every 78 steps (1/6 epoch) set the resolution of the
steps-to-target figures.
"""

from beta_optax.training.config import TrainConfig

# Two subprocesses, pinned one per core, each with a single-threaded XLA.
WORKERS = 2


def get_config() -> TrainConfig:
    """Return the preset; every field not set here keeps the TrainConfig default."""
    return TrainConfig(
        dataset="fashion_mnist",
        width_multiplier=1 / 8,
        num_epochs=1.5,
        eval_every_steps=78,
        log_every_steps=6,
        checkpoint_every_steps=0,
        targets=(0.80, 0.84, 0.86),
    )

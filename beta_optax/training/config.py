"""Settings of one training run, as a plain dataclass that presets override field by field."""

import dataclasses
import json
import os

METHODS = ("sgd", "beta_sgd", "hybrid", "adam", "onecycle")
MODELS = ("resnet18", "resnet_tiny")
SYNTHETIC_DATASET = "synthetic"


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides what a training run computes, plus where it reads data.

    The optimizer, model, data order and augmentation all follow from these fields and `seed`,
    so two runs with equal configs produce the same parameters.
    """

    # Dataset name: "cifar10", "fashion_mnist", or "synthetic" (random images for tests).
    dataset: str = "cifar10"
    # Directory with a tensorflow-datasets copy or the original files; None: the tfds default.
    data_dir: str | None = None
    # Allow a tensorflow-datasets download when no local copy exists (slow to fail offline).
    download: bool = False
    # Training and test examples of the "synthetic" dataset (ignored for real datasets).
    synthetic_examples: tuple[int, int] = (256, 128)
    # Image shape (height, width, channels) of the "synthetic" dataset.
    synthetic_image_shape: tuple[int, int, int] = (8, 8, 3)

    # Model: "resnet18" (stages 2, 2, 2, 2) or "resnet_tiny" (stages 1, 1, 1, 1, for tests).
    model: str = "resnet18"
    # Channel multiplier of every convolution; 1.0 is the standard 64-128-256-512 ResNet-18.
    width_multiplier: float = 1.0

    # Optimizer: one of METHODS; see beta_optax.training.optimizers for each definition.
    method: str = "sgd"
    # Peak learning rate of the SGD family (sgd, beta_sgd, hybrid, onecycle) at `batch_size`.
    sgd_peak_learning_rate: float = 0.1
    # Peak learning rate of Adam.
    adam_peak_learning_rate: float = 1e-3
    # Fraction of the training steps spent in linear warmup from 0 to the peak learning rate.
    warmup_fraction: float = 0.05
    # Constant momentum of "sgd", and the momentum "hybrid" switches to.
    momentum: float = 0.9
    # L2 weight decay added to the gradients of the SGD family; 0 for Adam. Only kernels
    # (parameters with 2 or more dimensions) decay, so BatchNorm scales and biases do not.
    weight_decay: float = 5e-4

    # Global batch size, split evenly over all devices.
    batch_size: int = 128
    # Training length in epochs (passes over the training set, remainder batches dropped).
    num_epochs: float = 30.0
    # Training length in steps; when set, it replaces `num_epochs`.
    num_steps: int | None = None
    # Zero padding (pixels per side) before the random crop; 0 turns cropping off.
    crop_padding: int = 4
    # Random horizontal flips. Off for Fashion-MNIST would also be defensible; on by default.
    flip: bool = True

    # Seed of everything random: initialization, data order and augmentation.
    seed: int = 0
    # Steps between train-metric log lines (loss, accuracy, learning rate, momentum).
    log_every_steps: int = 50
    # Steps between evaluations on the test split; the last step is always evaluated.
    eval_every_steps: int = 500
    # Test examples per evaluation batch (padded to a multiple of the device count).
    eval_batch_size: int = 1000
    # Steps between checkpoints; the last step is always saved. 0 saves only at the end.
    checkpoint_every_steps: int = 1000
    # Checkpoints kept on disk (the newest ones).
    checkpoints_to_keep: int = 2
    # Test accuracies whose first crossing the benchmark reports, in [0, 1].
    targets: tuple[float, ...] = (0.90, 0.95)
    # Also run the damping scan and the misclassification attribution at every evaluation point,
    # writing scan.jsonl and history.jsonl for `python -m beta_optax diagnose`. Off by default
    # because it adds evaluation time (the training clock stops for it).
    record_diagnostics: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"`method`={self.method!r} is unknown; expected one of {METHODS}.")
        if self.model not in MODELS:
            raise ValueError(f"`model`={self.model!r} is unknown; expected one of {MODELS}.")
        if self.batch_size <= 0:
            raise ValueError(f"`batch_size` must be positive, got {self.batch_size}.")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"`warmup_fraction` must be in [0, 1), got {self.warmup_fraction}.")
        if self.num_steps is not None and self.num_steps <= 0:
            raise ValueError(f"`num_steps` must be positive or None, got {self.num_steps}.")
        if self.num_steps is None and self.num_epochs <= 0:
            raise ValueError(f"`num_epochs` must be positive, got {self.num_epochs}.")
        for name in ("log_every_steps", "eval_every_steps", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}.")
        if any(not 0.0 < target <= 1.0 for target in self.targets):
            raise ValueError(f"`targets` must be accuracies in (0, 1], got {self.targets}.")
        self.targets = tuple(self.targets)
        self.synthetic_examples = tuple(self.synthetic_examples)
        self.synthetic_image_shape = tuple(self.synthetic_image_shape)

    @property
    def peak_learning_rate(self) -> float:
        """Peak learning rate of this run's optimizer family."""
        if self.method == "adam":
            return self.adam_peak_learning_rate
        return self.sgd_peak_learning_rate

    def replace(self, **changes) -> "TrainConfig":
        """Return a copy with the given fields changed (and checked again)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        """Serialize every field as a JSON object."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """Build a config from `to_json` output; unknown keys raise ValueError."""
        fields = json.loads(text)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(
                f"Unknown config fields {unknown}; expected a subset of {sorted(known)}."
            )
        return cls(**fields)


def total_steps(config: TrainConfig, num_train_examples: int) -> int:
    """Return the number of training steps a run takes, from `num_steps` or `num_epochs`."""
    if config.num_steps is not None:
        return config.num_steps
    steps_per_epoch = num_train_examples // config.batch_size
    return max(1, round(config.num_epochs * steps_per_epoch))


def default_compilation_cache_dir(repo_root: str | os.PathLike) -> str:
    """Return $JAX_COMPILATION_CACHE_DIR, or `.jax_cache` under `repo_root` when it is unset."""
    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(repo_root, ".jax_cache")

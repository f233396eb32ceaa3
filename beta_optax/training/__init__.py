"""Training harness for beta-optax: datasets, augmentation, the ResNet-18, the train loop.

Needs the `train` extra (flax, orbax-checkpoint, tensorflow-datasets, matplotlib, tqdm).
"""

from beta_optax.training.augment import augment_batch as augment_batch
from beta_optax.training.augment import batch_indices as batch_indices
from beta_optax.training.augment import epoch_permutation as epoch_permutation
from beta_optax.training.augment import normalize as normalize
from beta_optax.training.augment import random_crop as random_crop
from beta_optax.training.augment import random_flip as random_flip
from beta_optax.training.augment import steps_per_epoch as steps_per_epoch
from beta_optax.training.checkpoint import Checkpointer as Checkpointer
from beta_optax.training.config import METHODS as METHODS
from beta_optax.training.config import TrainConfig as TrainConfig
from beta_optax.training.data import DATASET_NAMES as DATASET_NAMES
from beta_optax.training.data import Dataset as Dataset
from beta_optax.training.data import DatasetNotFoundError as DatasetNotFoundError
from beta_optax.training.data import dataset_statistics as dataset_statistics
from beta_optax.training.data import default_data_dir as default_data_dir
from beta_optax.training.data import load_dataset as load_dataset
from beta_optax.training.loop import NonFiniteLossError as NonFiniteLossError
from beta_optax.training.loop import RunResult as RunResult
from beta_optax.training.loop import train_and_evaluate as train_and_evaluate
from beta_optax.training.metrics import MetricWriter as MetricWriter
from beta_optax.training.metrics import read_metrics as read_metrics
from beta_optax.training.models import LAYER_GROUPS as LAYER_GROUPS
from beta_optax.training.models import BasicBlock as BasicBlock
from beta_optax.training.models import ResNet as ResNet
from beta_optax.training.models import ResNet1 as ResNet1
from beta_optax.training.models import ResNet18 as ResNet18
from beta_optax.training.models import count_params as count_params
from beta_optax.training.models import group_param_counts as group_param_counts
from beta_optax.training.models import model_flops_per_example as model_flops_per_example
from beta_optax.training.models import resnet_group as resnet_group
from beta_optax.training.models import stage_widths as stage_widths
from beta_optax.training.optimizers import OptimizerSpec as OptimizerSpec
from beta_optax.training.optimizers import create_learning_rate_fn as create_learning_rate_fn
from beta_optax.training.optimizers import create_optimizer as create_optimizer
from beta_optax.training.train import TrainState as TrainState
from beta_optax.training.train import create_train_state as create_train_state
from beta_optax.training.train import eval_step as eval_step
from beta_optax.training.train import train_step as train_step

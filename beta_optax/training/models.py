"""ResNet-18 in its CIFAR form, with stable parameter names grouped into seven layer groups.

ResNet-18 comes from He et al, `Deep Residual Learning for Image Recognition
<https://arxiv.org/abs/1512.03385>`_, 2015. Its CIFAR form, the usual one for 32x32 inputs,
replaces the ImageNet stem by one 3x3 convolution with stride 1 and no max-pool. Small images
so keep their resolution into the first stage.

Parameter and batch_stats paths are fixed by explicit module names::

    stem_conv, stem_norm,
    stage{1..4}_block{1,2}/{conv1, norm1, conv2, norm2, conv_proj, norm_proj},
    head

and `resnet_group` maps each path to one of `LAYER_GROUPS`.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LAYER_GROUPS = ("stem_conv", "stem_norm", "stage1", "stage2", "stage3", "stage4", "head")

BASE_WIDTHS = (64, 128, 256, 512)

# Running averages keep 90% of their value per step, the usual 0.1 update of CIFAR ResNets.
_NORM_MOMENTUM = 0.9
_NORM_EPSILON = 1e-5

_COLLECTIONS = ("params", "batch_stats")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection.

    The shortcut is the identity, or a 1x1 convolution and batch norm (`conv_proj`,
    `norm_proj`) when the stride or the width changes.

    Attributes:
        features: output channels.
        strides: stride of the first convolution and of the projection.
        dtype: computation dtype.
    """

    features: int
    strides: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array, train: bool) -> jax.Array:
        conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
        norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=_NORM_MOMENTUM,
            epsilon=_NORM_EPSILON,
            dtype=self.dtype,
        )
        same = ((1, 1), (1, 1))

        outputs = conv(self.features, (3, 3), self.strides, padding=same, name="conv1")(inputs)
        outputs = nn.relu(norm(name="norm1")(outputs))
        outputs = conv(self.features, (3, 3), padding=same, name="conv2")(outputs)
        outputs = norm(name="norm2")(outputs)

        shortcut = inputs
        if self.strides != 1 or inputs.shape[-1] != self.features:
            shortcut = conv(self.features, (1, 1), self.strides, padding="VALID", name="conv_proj")(
                inputs
            )
            shortcut = norm(name="norm_proj")(shortcut)
        return nn.relu(outputs + shortcut)


class ResNet(nn.Module):
    """ResNet with basic blocks in the CIFAR form: 3x3 stem, four stages, average pool, head.

    Stage `k` (1-based) has `stage_sizes[k - 1]` blocks of width
    `max(1, round(BASE_WIDTHS[k - 1] * width_multiplier))`. Stages 2 to 4 halve the
    resolution in their first block. Any input size and channel count work: a 28x28 input
    runs through 28, 14, 7 and 4 pixels.

    Call it as `model.apply(variables, images, train)`, where `train` is a Python bool, since it
    selects the batch norm mode when the model is traced. With `train=True` batch norm uses
    batch statistics and updates `batch_stats` (pass `mutable=["batch_stats"]`). With
    `train=False` it uses the running averages.

    Attributes:
        stage_sizes: blocks per stage, four positive ints.
        num_classes: outputs of the head.
        width_multiplier: factor on the widths 64-128-256-512, > 0.
        dtype: computation dtype. Parameters stay float32.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    num_classes: int = 10
    width_multiplier: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        if images.ndim != 4:
            raise ValueError(
                f"`images` must have shape (batch, height, width, channels), got {images.shape}."
            )
        widths = stage_widths(self.width_multiplier)
        if len(self.stage_sizes) != len(widths) or min(self.stage_sizes) < 1:
            raise ValueError(
                f"`stage_sizes` must be four positive ints, got stage_sizes={self.stage_sizes}."
            )

        outputs = nn.Conv(
            widths[0],
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            dtype=self.dtype,
            name="stem_conv",
        )(jnp.asarray(images, self.dtype))
        outputs = nn.BatchNorm(
            use_running_average=not train,
            momentum=_NORM_MOMENTUM,
            epsilon=_NORM_EPSILON,
            dtype=self.dtype,
            name="stem_norm",
        )(outputs)
        outputs = nn.relu(outputs)

        for stage, (num_blocks, width) in enumerate(
            zip(self.stage_sizes, widths, strict=True), start=1
        ):
            for block in range(1, num_blocks + 1):
                strides = 2 if stage > 1 and block == 1 else 1
                outputs = BasicBlock(
                    width, strides, dtype=self.dtype, name=f"stage{stage}_block{block}"
                )(outputs, train)

        outputs = jnp.mean(outputs, axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(outputs)


def stage_widths(width_multiplier: float) -> tuple[int, ...]:
    """Return the channel widths of the four stages for a width multiplier."""
    if not width_multiplier > 0:
        raise ValueError(f"`width_multiplier` must be > 0, got {width_multiplier=}.")
    return tuple(max(1, round(width * width_multiplier)) for width in BASE_WIDTHS)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))

# One block per stage at 1/16 width (4-8-16-32 channels): the same paths and groups as
# ResNet-18 at a tiny fraction of the cost, for tests.
ResNet1 = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), width_multiplier=1 / 16)


def resnet_group(path: str | Sequence[Any]) -> str:
    """Map a parameter or batch_stats path of `ResNet` to its layer group.

    Args:
        path: a "/"-joined path such as "params/stage2_block1/conv1/kernel" or
            "stage2_block1/norm_proj/scale" (the collection name is optional), or a key path
            from `jax.tree_util.tree_flatten_with_path` over params or over the variables.

    Returns:
        One of `LAYER_GROUPS`.

    Raises:
        ValueError: the path belongs to no group.
    """
    names = _path_names(path)
    if names and names[0] in _COLLECTIONS:
        names = names[1:]
    top = names[0] if names else ""

    if top in ("stem_conv", "stem_norm", "head"):
        return top
    stage, separator, block = top.partition("_block")
    if separator and stage in LAYER_GROUPS and block.isdigit():
        return stage
    raise ValueError(
        f"Path {'/'.join(names) or path!r} belongs to no ResNet layer group. The first module "
        f"name must be stem_conv, stem_norm, stage1..4_blockN or head (groups {LAYER_GROUPS})."
    )


def _path_names(path):
    if isinstance(path, str):
        return [name for name in path.split("/") if name]
    names = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            names.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            names.append(entry.name)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            names.append(str(entry.idx))
        else:
            names.append(str(entry))
    return names


def count_params(params: Any) -> int:
    """Return the number of scalars in a pytree of arrays."""
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params))


def group_param_counts(params: Any) -> dict[str, int]:
    """Count the scalars of each layer group, every group of `LAYER_GROUPS` in order.

    Args:
        params: the `params` collection of a `ResNet`, or its whole variables dict (then
            batch_stats count too).

    Returns:
        Dict from group name to count, 0 for a group without parameters.
    """
    counts = dict.fromkeys(LAYER_GROUPS, 0)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        counts[resnet_group(path)] += int(np.prod(leaf.shape))
    return counts


def model_flops_per_example(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Count the forward floating-point operations of one example, analytically.

    Counts the multiply-adds of every `nn.Conv` and `nn.Dense` call as two operations each:
    per layer, `2 * output elements * kernel inputs per output`. Batch norm, activations,
    pooling and biases are left out. By an estimate of four operations per normalized
    element, they would add about 0.2% in ResNet-18. The model runs abstractly
    (`jax.eval_shape`), so nothing is compiled or computed.

    XLA's cost analysis of the compiled forward reports fewer FLOPs, 0.87 times this count
    for ResNet-18 on 32x32x3 (jax 0.10.2, CPU), because it skips the products with the zero
    padding of each convolution.

    Args:
        model: a Flax module called as `model.apply(variables, images, train)`.
        input_shape: shape of one example, (height, width, channels).

    Returns:
        Forward FLOPs per example (in eval mode). A train step costs about three times as
        much (forward, plus backward to activations and to weights).
    """
    images = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    layer_flops = []

    def count_layer(next_fun, args, kwargs, context):
        outputs = next_fun(*args, **kwargs)
        module = context.module
        if isinstance(module, nn.Conv | nn.Dense) and context.method_name == "__call__":
            kernel_shape = module.get_variable("params", "kernel").shape
            inputs_per_output = int(np.prod(kernel_shape[:-1]))
            layer_flops.append(2 * int(np.prod(outputs.shape)) * inputs_per_output)
        return outputs

    def forward(images):
        variables = model.init(jax.random.key(0), images, False)
        layer_flops.clear()
        with nn.intercept_methods(count_layer):
            return model.apply(variables, images, False)

    jax.eval_shape(forward, images)
    return sum(layer_flops)

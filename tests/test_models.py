"""Tests for beta_optax.training.models: ResNet shapes, sizes, modes, groups and FLOPs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beta_optax.training import models


def init_variables(model, input_shape, batch=2):
    images = jnp.zeros((batch, *input_shape), jnp.float32)
    return model.init(jax.random.key(0), images, False)


def abstract_variables(model, input_shape):
    """Shapes of the variables, without computing them (fast for the full-width network)."""
    images = jnp.zeros((1, *input_shape), jnp.float32)
    return jax.eval_shape(lambda images: model.init(jax.random.key(0), images, False), images)


def resnet18_layers(num_classes, channels, height, width):
    """List every conv and dense layer of the CIFAR ResNet-18 from its description.

    Returns:
        Tuples (kernel size, input channels, output channels, output height, output width).
        Dense layers have kernel size 1 and output size 1 x 1.
    """
    layers = [(3, channels, 64, height, width)]
    in_width = 64
    for stage, out_width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            # A 3x3 convolution with padding 1 and a 1x1 one without padding give the same size.
            height, width = (height - 1) // stride + 1, (width - 1) // stride + 1
            layers.append((3, in_width, out_width, height, width))
            layers.append((3, out_width, out_width, height, width))
            if stride != 1 or in_width != out_width:
                layers.append((1, in_width, out_width, height, width))
            in_width = out_width
    layers.append((1, 512, num_classes, 1, 1))
    return layers


@pytest.mark.parametrize(
    "input_shape", [(28, 28, 1), (32, 32, 3), (17, 23, 2)], ids=["28x28x1", "32x32x3", "17x23x2"]
)
def test_resnet_output_shape(input_shape):
    model = models.ResNet1(num_classes=7)
    variables = init_variables(model, input_shape, batch=3)

    logits = model.apply(variables, jnp.ones((3, *input_shape)), False)

    assert logits.shape == (3, 7)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


def test_resnet18_param_count_cifar():
    variables = abstract_variables(models.ResNet18(num_classes=10), (32, 32, 3))

    # Convolutions have no bias, and each batch norm after a conv has a scale and a bias.
    expected = 0
    for kernel, inputs, outputs, _, _ in resnet18_layers(10, 3, 32, 32)[:-1]:
        expected += kernel * kernel * inputs * outputs + 2 * outputs
    expected += 512 * 10 + 10

    assert models.count_params(variables["params"]) == expected
    assert expected == pytest.approx(11.17e6, rel=1e-3)  # the usual "11.2M" of ResNet-18


@pytest.mark.parametrize(
    ("width_multiplier", "widths"),
    [(1.0, (64, 128, 256, 512)), (0.25, (16, 32, 64, 128)), (0.001, (1, 1, 1, 1))],
    ids=["full", "quarter", "floor_one"],
)
def test_resnet_widths(width_multiplier, widths):
    model = models.ResNet18(width_multiplier=width_multiplier)
    params = abstract_variables(model, (8, 8, 3))["params"]

    assert models.stage_widths(width_multiplier) == widths
    assert params["stem_conv"]["kernel"].shape == (3, 3, 3, widths[0])
    for stage, width in enumerate(widths, start=1):
        assert params[f"stage{stage}_block2"]["conv2"]["kernel"].shape == (3, 3, width, width)


def test_resnet_projection_only_where_shape_changes():
    params = abstract_variables(models.ResNet18(), (8, 8, 3))["params"]

    with_projection = sorted(name for name, block in params.items() if "conv_proj" in block)

    assert with_projection == ["stage2_block1", "stage3_block1", "stage4_block1"]
    assert "norm_proj" in params["stage2_block1"]


@pytest.mark.parametrize(
    "kwargs",
    [{"stage_sizes": (2, 2, 2)}, {"stage_sizes": (2, 0, 2, 2)}, {"width_multiplier": 0.0}],
    ids=["three_stages", "empty_stage", "zero_width"],
)
def test_resnet_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match="`stage_sizes`|`width_multiplier`"):
        init_variables(models.ResNet(**kwargs), (8, 8, 3))


def test_resnet_train_mode_updates_batch_stats():
    model = models.ResNet1()
    variables = init_variables(model, (8, 8, 3))
    images = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))

    _, train_updates = model.apply(variables, images, True, mutable=["batch_stats"])
    _, eval_updates = model.apply(variables, images, False, mutable=["batch_stats"])

    train_changed = jax.tree.map(
        lambda old, new: not np.allclose(old, new),
        variables["batch_stats"],
        train_updates["batch_stats"],
    )
    assert all(jax.tree.leaves(train_changed))
    eval_equal = jax.tree.map(np.array_equal, variables["batch_stats"], eval_updates["batch_stats"])
    assert all(jax.tree.leaves(eval_equal))


def test_resnet_eval_mode_uses_running_averages():
    model = models.ResNet1()
    variables = init_variables(model, (8, 8, 3))
    images = jax.random.normal(jax.random.key(2), (4, 8, 8, 3))

    # In eval mode each example's output is independent of the rest of the batch.
    batch_logits = model.apply(variables, images, False)
    single_logits = model.apply(variables, images[:1], False)
    train_batch, _ = model.apply(variables, images, True, mutable=["batch_stats"])
    train_single, _ = model.apply(variables, images[:2], True, mutable=["batch_stats"])

    np.testing.assert_allclose(batch_logits[:1], single_logits, rtol=1e-5, atol=1e-6)
    assert not np.allclose(train_batch[:1], train_single[:1])


def test_resnet_group_covers_all_paths():
    variables = abstract_variables(models.ResNet18(), (8, 8, 3))

    groups = [
        models.resnet_group(path) for path, _ in jax.tree_util.tree_flatten_with_path(variables)[0]
    ]

    assert set(groups) == set(models.LAYER_GROUPS)
    assert groups.count("stem_norm") == 4  # scale, bias, mean, var


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("params/stage2_block1/conv1/kernel", "stage2"),
        ("stage2_block1/norm_proj/scale", "stage2"),
        ("batch_stats/stem_norm/mean", "stem_norm"),
        ("/params/head/bias", "head"),
        ("stage4_block2/conv2/kernel", "stage4"),
        ("stem_conv/kernel", "stem_conv"),
    ],
)
def test_resnet_group_strings(path, group):
    assert models.resnet_group(path) == group


def test_resnet_group_key_path_of_params():
    params = abstract_variables(models.ResNet1(), (8, 8, 3))["params"]
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]

    for path, _ in leaves:
        as_string = "/".join(entry.key for entry in path)
        assert models.resnet_group(path) == models.resnet_group(as_string)


@pytest.mark.parametrize(
    "path",
    ["params/Dense_0/kernel", "stage5_block1/conv1/kernel", "params", "", "stage2/conv1/kernel"],
    ids=["other_module", "stage5", "collection_only", "empty", "no_block"],
)
def test_resnet_group_unknown_path(path):
    with pytest.raises(ValueError, match="no ResNet layer group") as raised:
        models.resnet_group(path)

    assert "stem_conv" in str(raised.value)


def test_group_param_counts_sum_to_total():
    params = abstract_variables(models.ResNet18(), (32, 32, 3))["params"]

    counts = models.group_param_counts(params)

    assert tuple(counts) == models.LAYER_GROUPS
    assert sum(counts.values()) == models.count_params(params)
    assert counts["stem_conv"] == 3 * 3 * 3 * 64
    assert counts["stem_norm"] == 2 * 64
    assert counts["head"] == 512 * 10 + 10


def test_model_flops_resnet18_cifar():
    flops = models.model_flops_per_example(models.ResNet18(num_classes=10), (32, 32, 3))

    expected = sum(
        2 * kernel * kernel * inputs * outputs * height * width
        for kernel, inputs, outputs, height, width in resnet18_layers(10, 3, 32, 32)
    )
    assert flops == expected


class SingleConv(nn.Module):
    @nn.compact
    def __call__(self, images, train):
        del train
        return nn.Conv(5, (3, 3), padding="VALID")(images)


def test_model_flops_matches_xla_cost_analysis():
    # XLA counts the multiply-adds of a convolution without padding exactly as the model does.
    model = SingleConv()
    images = jnp.zeros((1, 10, 12, 4))
    variables = model.init(jax.random.key(0), images, False)

    compiled = jax.jit(lambda variables, images: model.apply(variables, images, False))
    cost = compiled.lower(variables, images).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost

    flops = models.model_flops_per_example(model, (10, 12, 4))
    assert flops == 2 * 8 * 10 * 3 * 3 * 4 * 5
    # The bias add costs one operation per output, which the model count leaves out.
    assert cost["flops"] == pytest.approx(flops + 8 * 10 * 5, rel=0.01)

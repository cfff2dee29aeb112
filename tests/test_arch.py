"""Network view, layer removal, layer shrinkage, rebuild and size measures (n2n.arch)."""

from __future__ import annotations

import collections
import copy
import io
import math
import random
import time

import pytest
import torch
from torch import nn

from custom_models import SmallResidualNet, UntraceableNet, plain_chain
from n2n.arch import (
    KINDS,
    STATE_DIM,
    NetworkView,
    arch_signature,
    count_flops,
    count_params,
    rebuild,
    remove_layers,
    shrink_layers,
)
from n2n.arch.resize import fitted_to_input
from n2n.config import SearchConfig
from n2n.errors import CheckpointError, ConfigError, ModelError
from n2n.models import create_model
from n2n.search.stages import make_stage

RATIOS = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
IMAGE = (3, 16, 16)

# Tiny widths and 16x16 inputs keep every rewrite in milliseconds.
ZOO_SPECS = {
    "conv4": dict(in_channels=1, width_mult=0.25),
    "vgg11": dict(width_mult=0.125),
    "vgg13": dict(width_mult=0.125),
    "vgg16": dict(width_mult=0.125),
    "vgg19": dict(width_mult=0.125),
    "resnet18": dict(width_mult=0.125),
    "resnet34": dict(width_mult=0.125),
}
CUSTOM_BUILDERS = {"plain_chain": plain_chain, "small_residual": SmallResidualNet}


pytestmark = pytest.mark.usefixtures("one_thread")


def zoo(name: str, seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **{**ZOO_SPECS[name], **overrides})


def example_for(name: str, batch: int = 1) -> torch.Tensor:
    channels = ZOO_SPECS.get(name, {}).get("in_channels", 3)
    return torch.randn(batch, channels, *IMAGE[1:], generator=torch.Generator().manual_seed(1))


def build_any(name: str, seed: int = 0) -> nn.Module:
    if name in CUSTOM_BUILDERS:
        torch.manual_seed(seed)
        return CUSTOM_BUILDERS[name]()
    return zoo(name, seed)


def run(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(inputs)


def mask_for(view: NetworkView, *names: str) -> list[bool]:
    chosen = {view.index(name) for name in names}
    return [index in chosen for index in range(len(view.layers))]


def weight(model: nn.Module, name: str) -> torch.Tensor:
    return model.get_submodule(name).weight.detach()


# --------------------------------------------------------------------- the view


def test_conv4_view_lists_layers_kinds_and_removable_flags():
    model, inputs = zoo("conv4"), example_for("conv4")
    view = NetworkView.build(model, inputs)

    assert [(info.name, info.kind, info.removable) for info in view.layers] == [
        ("features.0", "conv", False),  # first layer
        ("features.3", "conv", True),
        ("features.6", "maxpool", True),
        ("features.7", "conv", True),
        ("features.10", "conv", True),
        ("features.13", "maxpool", True),
        ("avgpool", "avgpool", False),
        ("classifier.0", "linear", False),
        ("classifier.2", "linear", False),  # last layer
    ]
    conv = view.layers[1]
    assert (conv.kernel, conv.stride, conv.padding, conv.out_channels) == (3, 1, 1, 8)
    assert (view.layers[2].kernel, view.layers[2].stride) == (2, 2)
    assert view.layers[-1].out_channels == 10
    assert all(info.skip_start == info.skip_end == 0 for info in view.layers)  # no residual block
    assert view.removable_mask().tolist() == [info.removable for info in view.layers]
    assert [(group.layers, group.channels) for group in view.groups] == [
        (("features.0",), 8), (("features.3",), 8), (("features.7",), 16), (("features.10",), 16), (("classifier.0",), 32)
    ]


def test_states_have_one_row_per_entry_scaled_to_about_unit_range():
    model, inputs = zoo("conv4"), example_for("conv4")
    view = NetworkView.build(model, inputs)
    states = view.layer_states()

    assert states.shape == (len(view.layers), STATE_DIM) and states.dtype == torch.float32
    assert torch.isfinite(states).all() and states.min() >= 0 and states.max() <= 1.5
    one_hot = states[:, : len(KINDS)]
    assert one_hot.sum(dim=1).tolist() == [1.0] * len(view.layers)
    assert [KINDS[i] for i in one_hot.argmax(dim=1).tolist()] == [info.kind for info in view.layers]
    # Wider outputs give a larger width feature; states differ between layers of different widths.
    width_column = len(KINDS) + 3
    assert states[view.index("features.7"), width_column] > states[view.index("features.3"), width_column]
    groups = view.group_states()
    assert groups.shape == (len(view.groups), STATE_DIM)
    assert torch.equal(groups[2], states[view.index("features.7")])


def test_vgg11_view_every_stride_one_conv_and_pool_is_removable():
    model, inputs = zoo("vgg11"), example_for("vgg11")
    view = NetworkView.build(model, inputs)
    kinds = collections.Counter(info.kind for info in view.layers)

    assert kinds == {"conv": 8, "maxpool": 5, "avgpool": 1, "linear": 1}
    assert view.layers[0].kind == "conv" and not view.layers[0].removable
    assert all(info.removable for info in view.layers[1:] if info.kind in ("conv", "maxpool"))
    assert not any(info.removable for info in view.layers if info.kind in ("avgpool", "linear"))
    assert [group.channels for group in view.groups] == [8, 16, 32, 32, 64, 64, 64, 64]
    assert all("classifier" not in group.layers for group in view.groups)


def test_resnet18_view_has_blocks_as_units_and_tied_residual_groups():
    model, inputs = zoo("resnet18"), example_for("resnet18")
    view = NetworkView.build(model, inputs)
    by_name = {info.name: info for info in view.layers}
    blocks = [info for info in view.layers if info.kind == "block"]

    assert [block.name for block in blocks] == [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    assert all(block.removable for block in blocks)
    assert by_name["layer2.0"].stride == 2 and by_name["layer2.0"].out_channels == 16
    assert not by_name["conv1"].removable and not by_name["fc"].removable and not by_name["avgpool"].removable
    # Layers inside blocks are listed with their position on the block's path, never removable.
    assert (by_name["layer1.0.conv1"].skip_start, by_name["layer1.0.conv1"].skip_end) == (1, 2)
    assert (by_name["layer1.0.conv2"].skip_start, by_name["layer1.0.conv2"].skip_end) == (2, 1)
    shortcut = by_name["layer2.0.shortcut.0"]
    assert (shortcut.kind, shortcut.kernel, shortcut.stride, shortcut.skip_start, shortcut.skip_end) == ("shortcut", 1, 2, 1, 1)
    assert not any(info.removable for info in view.layers if info.kind in ("conv", "shortcut") and info.skip_start)
    # The block entry comes right before the layers inside it.
    assert view.index("layer2.0") + 1 == view.index("layer2.0.conv1")

    groups = {group.layers: group.channels for group in view.groups}
    assert groups[("conv1", "layer1.0.conv2", "layer1.1.conv2")] == 8  # stem and stage-1 block outputs
    assert groups[("layer2.0.conv2", "layer2.0.shortcut.0", "layer2.1.conv2")] == 16
    assert len(view.groups) == 12 and view.groups[0].layers[0] == "conv1"
    assert all("fc" not in group.layers for group in view.groups)


def test_custom_residual_net_is_understood_by_tracing_alone():
    model = SmallResidualNet()
    view = NetworkView.build(model, torch.randn(2, *IMAGE))
    blocks = [info.name for info in view.layers if info.kind == "block"]

    assert blocks == ["stages.0.0", "stages.0.1", "stages.1.0", "stages.1.1", "refine"]
    assert view.layers[view.index("max_pool2d")].removable  # a functional max pool
    assert view.layers[view.index("adaptive_avg_pool2d")].kind == "avgpool"
    assert view.layers[view.index("stages.1.0.skip.0")].kind == "shortcut"
    layers = [group.layers for group in view.groups]
    assert ("stem.0", "stages.0.0.body.3", "stages.0.1.body.3") in layers
    assert ("stages.1.0.skip.0", "stages.1.0.body.3", "stages.1.1.body.3", "refine.3") in layers


def test_custom_plain_chain_view_uses_its_own_names():
    view = NetworkView.build(plain_chain(), torch.randn(1, *IMAGE))

    assert [info.name for info in view.layers] == ["stem", "conv_a", "pool_1", "conv_b", "conv_c", "pool_2", "hidden", "logits"]
    assert [info.removable for info in view.layers] == [False, True, True, True, True, True, False, False]
    assert [group.layers[0] for group in view.groups] == ["stem", "conv_a", "conv_b", "conv_c", "hidden"]


def test_untraceable_model_is_a_model_error():
    with pytest.raises(ModelError, match="cannot be traced"):
        NetworkView.build(UntraceableNet(), torch.randn(1, *IMAGE))


def test_model_failing_on_the_example_is_a_model_error():
    with pytest.raises(ModelError, match="fails on an example input"):
        NetworkView.build(zoo("vgg11"), torch.randn(1, 5, 16, 16))


def test_building_a_view_leaves_the_model_untouched():
    model, inputs = zoo("resnet18"), example_for("resnet18", batch=4)
    model.train()
    before = copy.deepcopy(model.state_dict())
    NetworkView.build(model, inputs)

    assert model.training
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


# --------------------------------------------------------------------- removal


def test_removing_one_conv_keeps_teacher_weights_elsewhere():
    teacher, inputs = zoo("conv4"), example_for("conv4")
    view = NetworkView.build(teacher, inputs)
    rewrite = remove_layers(teacher, view, mask_for(view, "features.3"), inputs)
    child = rewrite.child

    assert rewrite.reason is None and run(child, inputs).shape == (1, 10)
    removed = 8 * 8 * 9 + 2 * 8  # the conv and its BatchNorm
    assert rewrite.params == count_params(child) == count_params(teacher) - removed
    names = dict(child.named_modules())
    assert "features.3" not in names and "features.4" not in names and "features.0" in names
    child_state, teacher_state = child.state_dict(), teacher.state_dict()
    assert set(child_state) < set(teacher_state)
    assert all(torch.equal(value, teacher_state[key]) for key, value in child_state.items())
    assert rewrite.flops == count_flops(child, inputs) < count_flops(teacher, inputs)
    assert rewrite.step == {"op": "remove", "remove": mask_for(view, "features.3")}


def test_layer_after_a_removed_conv_keeps_its_strongest_input_slices():
    teacher, inputs = zoo("conv4"), example_for("conv4")
    view = NetworkView.build(teacher, inputs)
    child = remove_layers(teacher, view, mask_for(view, "features.7"), inputs).child  # 8 -> 16 conv

    old = weight(teacher, "features.10")  # 16 -> 16, now reads 8 channels
    strongest = old.abs().sum(dim=(0, 2, 3)).argsort(descending=True)[:8].sort().values
    assert weight(child, "features.10").shape == (16, 8, 3, 3)
    assert torch.equal(weight(child, "features.10"), old[:, strongest])


def test_removed_identity_block_becomes_identity():
    teacher, inputs = zoo("resnet18"), example_for("resnet18", batch=2)
    view = NetworkView.build(teacher, inputs)
    rewrite = remove_layers(teacher, view, mask_for(view, "layer1.0"), inputs)

    reference = copy.deepcopy(teacher)
    reference.layer1[0] = nn.Identity()
    assert torch.allclose(run(rewrite.child, inputs), run(reference, inputs), atol=1e-6)
    assert rewrite.params == count_params(reference)
    # Only the activation after the sum is left of the block.
    assert {name for name, _ in rewrite.child.named_modules() if name.startswith("layer1.0.")} == {"layer1.0.relu2"}


def test_removed_projection_block_becomes_its_shortcut():
    teacher, inputs = zoo("resnet18"), example_for("resnet18", batch=2)
    view = NetworkView.build(teacher, inputs)
    rewrite = remove_layers(teacher, view, mask_for(view, "layer2.0"), inputs)
    names = dict(rewrite.child.named_modules())

    assert "layer2.0.shortcut.0" in names and "layer2.0.conv1" not in names
    reference = copy.deepcopy(teacher)
    block = reference.layer2[0]
    reference.layer2[0] = nn.Sequential(block.shortcut, block.relu2)  # the activation after the sum stays
    assert torch.allclose(run(rewrite.child, inputs), run(reference, inputs), atol=1e-6)


def test_custom_blocks_with_projection_and_top_level_sum_can_be_removed():
    teacher = SmallResidualNet()
    inputs = torch.randn(2, *IMAGE)
    view = NetworkView.build(teacher, inputs)
    rewrite = remove_layers(teacher, view, mask_for(view, "stages.1.0", "refine", "max_pool2d"), inputs)

    assert rewrite.reason is None and run(rewrite.child, inputs).shape == (2, 5)
    names = dict(rewrite.child.named_modules())
    assert "stages.1.0.skip.0" in names and "stages.1.0.body.0" not in names and "refine.0" not in names


def test_flags_at_non_removable_positions_are_ignored():
    teacher, inputs = zoo("resnet18"), example_for("resnet18")
    view = NetworkView.build(teacher, inputs)
    everything = remove_layers(teacher, view, [True] * len(view.layers), inputs)
    removable_only = remove_layers(teacher, view, view.removable_mask().tolist(), inputs)

    assert everything.params == removable_only.params
    assert arch_signature(everything.child, inputs) == arch_signature(removable_only.child, inputs)
    assert {"conv1", "fc"} <= dict(everything.child.named_modules()).keys()


def test_removal_rejections_carry_a_reason():
    teacher, inputs = zoo("conv4"), example_for("conv4")
    view = NetworkView.build(teacher, inputs)

    nothing = remove_layers(teacher, view, [False] * len(view.layers), inputs)
    assert nothing.child is None and "not smaller than its parent" in nothing.reason and nothing.params == 0
    short = remove_layers(teacher, view, [True], inputs)
    assert short.child is None and "expected 9 removal entries" in short.reason
    other = remove_layers(zoo("conv4", width_mult=0.5), view, view.removable_mask().tolist(), inputs)
    assert other.child is None and "different model" in other.reason

    chain = plain_chain()
    chain_view = NetworkView.build(chain, torch.randn(1, *IMAGE))
    # Without the pool the flattened map is 4x larger: the hidden layer grows past the savings.
    grown = remove_layers(chain, chain_view, mask_for(chain_view, "pool_1"), torch.randn(1, *IMAGE))
    assert grown.child is None and grown.reason.startswith("not smaller than its parent")


def test_children_keep_the_parent_training_mode():
    teacher, inputs = zoo("conv4"), example_for("conv4")
    view = NetworkView.build(teacher, inputs)
    for mode in (True, False):
        teacher.train(mode)
        removed = remove_layers(teacher, view, mask_for(view, "features.7"), inputs).child  # refits features.10
        shrunk = shrink_layers(teacher, view, [0.5] * len(view.groups), inputs, min_width=2).child
        assert all(module.training == mode for child in (removed, shrunk) for module in child.modules())


def test_scratch_init_gives_the_same_shapes_with_fresh_weights():
    teacher, inputs = zoo("conv4"), example_for("conv4")
    view = NetworkView.build(teacher, inputs)
    inherit = remove_layers(teacher, view, mask_for(view, "features.3"), inputs).child
    scratch = remove_layers(teacher, view, mask_for(view, "features.3"), inputs, init="scratch").child

    assert {k: v.shape for k, v in inherit.state_dict().items()} == {k: v.shape for k, v in scratch.state_dict().items()}
    assert torch.equal(weight(inherit, "features.0"), weight(teacher, "features.0"))
    assert not torch.equal(weight(scratch, "features.0"), weight(teacher, "features.0"))


def test_bad_options_are_config_errors():
    teacher, inputs = zoo("conv4"), example_for("conv4")
    view = NetworkView.build(teacher, inputs)
    with pytest.raises(ConfigError, match="init must be one of"):
        remove_layers(teacher, view, view.removable_mask().tolist(), inputs, init="random")
    with pytest.raises(ConfigError, match="min_width"):
        shrink_layers(teacher, view, [0.5] * len(view.groups), inputs, min_width=0)
    with pytest.raises(ConfigError, match="criterion must be one of contribution, l1"):
        shrink_layers(teacher, view, [0.5] * len(view.groups), inputs, criterion="l2")


def test_fitting_a_layer_to_a_new_input_width_cuts_or_grows_inputs():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    grown = fitted_to_input(conv, torch.randn(1, 7, 5, 5))
    assert grown.in_channels == 7 and grown.weight.shape == (6, 7, 3, 3)
    assert torch.equal(grown.weight[:, :4], conv.weight) and torch.equal(grown.bias, conv.bias)
    assert fitted_to_input(conv, torch.randn(1, 4, 5, 5)) is None

    linear = nn.Linear(10, 3)
    cut = fitted_to_input(linear, torch.randn(2, 6))
    strongest = linear.weight.abs().sum(0).argsort(descending=True)[:6].sort().values
    assert torch.equal(cut.weight, linear.weight[:, strongest])

    norm = nn.BatchNorm2d(5)
    norm.running_mean.fill_(2.0)
    wider = fitted_to_input(norm, torch.randn(1, 8, 2, 2))
    assert wider.num_features == 8 and wider.running_mean.tolist() == [2.0] * 5 + [0.0] * 3


# ------------------------------------------------------------------- shrinkage


def test_half_ratio_halves_every_group_down_to_min_width():
    teacher, inputs = zoo("conv4", width_mult=0.5), example_for("conv4", batch=2)  # widths 16, 16, 32, 32, 64
    view = NetworkView.build(teacher, inputs)
    rewrite = shrink_layers(teacher, view, [0.5] * len(view.groups), inputs)
    child = rewrite.child

    widths = [child.get_submodule(name).out_channels for name in ("features.0", "features.3", "features.7", "features.10")]
    assert widths == [10, 10, 16, 16]  # 8 would be under min_width=10
    assert child.get_submodule("classifier.0").out_features == 32
    assert child.get_submodule("classifier.2").out_features == 10
    assert run(child, inputs).shape == (2, 10) and type(child) is type(teacher)
    assert rewrite.params == count_params(child) < count_params(teacher)
    assert rewrite.step == {"op": "shrink", "ratios": [0.5] * 5, "min_width": 10}

    small = shrink_layers(teacher, view, [0.5] * len(view.groups), inputs, min_width=4).child
    assert small.get_submodule("features.0").out_channels == 8


def test_shrinking_keeps_the_channels_the_next_layer_gets_most_from():
    teacher, inputs = zoo("conv4", width_mult=0.5), example_for("conv4")
    norm = teacher.get_submodule("features.4")
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-2.0, 2.0, norm.num_features))  # signed: the scale's size counts
    view = NetworkView.build(teacher, inputs)
    ratios = [0.5 if group.layers == ("features.3",) else 1.0 for group in view.groups]
    child = shrink_layers(teacher, view, ratios, inputs, min_width=2).child

    reads = weight(teacher, "features.7").abs().sum(dim=(0, 2, 3))
    kept = (norm.weight.detach().abs() * reads).argsort(descending=True)[:8].sort().values
    assert torch.equal(weight(child, "features.3"), weight(teacher, "features.3")[kept])
    assert torch.equal(weight(child, "features.4"), weight(teacher, "features.4")[kept])  # its BatchNorm
    assert torch.equal(weight(child, "features.7"), weight(teacher, "features.7")[:, kept])  # its consumer
    assert torch.equal(weight(child, "features.0"), weight(teacher, "features.0"))  # other groups untouched


def teacher_with_a_silenced_large_filter() -> tuple[nn.Module, torch.Tensor]:
    """conv4 whose features.3 filter 0 has by far the largest L1 norm, yet passes on nearly nothing."""
    teacher, inputs = zoo("conv4", width_mult=0.5), example_for("conv4")
    with torch.no_grad():
        teacher.get_submodule("features.3").weight[0] *= 100  # by far the largest filter...
        teacher.get_submodule("features.4").weight[0] = 1e-3  # ...which its BatchNorm scales to nearly nothing
    return teacher, inputs


def test_a_filter_batchnorm_silences_is_cut_first_though_its_l1_norm_is_the_largest():
    teacher, inputs = teacher_with_a_silenced_large_filter()
    view = NetworkView.build(teacher, inputs)
    ratios = [0.5 if group.layers == ("features.3",) else 1.0 for group in view.groups]
    filters = weight(teacher, "features.3")

    def kept_filters(criterion: str) -> torch.Tensor:
        return weight(shrink_layers(teacher, view, ratios, inputs, min_width=2, criterion=criterion).child, "features.3")

    assert not any(torch.equal(row, filters[0]) for row in kept_filters("contribution"))
    by_l1 = filters.abs().sum(dim=(1, 2, 3)).argsort(descending=True)[:8].sort().values
    assert torch.equal(kept_filters("l1"), filters[by_l1])  # L1 filter pruning, as the prune baseline does


def test_the_search_keeps_the_channels_its_keep_channels_setting_names():
    teacher, inputs = teacher_with_a_silenced_large_filter()
    view = NetworkView.build(teacher, inputs)
    actions = torch.tensor([0 if group.layers == ("features.3",) else 1 for group in view.groups])
    loud_filter = weight(teacher, "features.3")[0]

    def kept_filters(keep_channels: str) -> torch.Tensor:
        config = SearchConfig(ratios=(0.5, 1.0), min_width=2, keep_channels=keep_channels)
        rewrite, _ = make_stage("shrinkage", config).apply(teacher, view, actions, inputs)
        return weight(rewrite.child, "features.3")

    by_contribution = kept_filters("contribution")
    assert len(by_contribution) == 8
    assert not any(torch.equal(row, loud_filter) for row in by_contribution)
    assert any(torch.equal(row, loud_filter) for row in kept_filters("l1"))


def test_residual_coupled_channels_shrink_together():
    teacher, inputs = zoo("resnet18"), example_for("resnet18", batch=2)
    view = NetworkView.build(teacher, inputs)
    ratios = [0.5] + [1.0] * (len(view.groups) - 1)  # only the stem / stage-1 output group
    child = shrink_layers(teacher, view, ratios, inputs, min_width=2, criterion="l1").child

    producers = view.groups[0].layers
    score = sum(weight(teacher, name).abs().sum(dim=(1, 2, 3)) for name in producers)
    kept = score.argsort(descending=True)[:4].sort().values
    for name in producers:
        assert torch.equal(weight(child, name), weight(teacher, name)[kept])
    for consumer in ("layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.shortcut.0"):
        assert torch.equal(weight(child, consumer), weight(teacher, consumer)[:, kept])
    assert run(child, inputs).shape == (2, 10)

    child = shrink_layers(teacher, view, ratios, inputs, min_width=2).child  # by contribution: coupled alike
    stem = weight(teacher, producers[0])
    kept = torch.tensor([next(i for i, row in enumerate(stem) if torch.equal(row, kept_row))
                         for kept_row in weight(child, producers[0])])
    for name in producers:
        assert torch.equal(weight(child, name), weight(teacher, name)[kept])
    for consumer in ("layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.shortcut.0"):
        assert torch.equal(weight(child, consumer), weight(teacher, consumer)[:, kept])
    assert run(child, inputs).shape == (2, 10)


def test_shrink_rejections_carry_a_reason():
    teacher, inputs = zoo("conv4"), example_for("conv4")
    view = NetworkView.build(teacher, inputs)
    groups = len(view.groups)

    assert "not smaller" in shrink_layers(teacher, view, [1.0] * groups, inputs).reason
    # The first two groups have 8 channels, under min_width=10: they stay as they are.
    assert "not smaller" in shrink_layers(teacher, view, [0.5, 0.5, 1.0, 1.0, 1.0], inputs).reason
    for bad in (0.0, -0.5, math.nan, "half"):
        assert "shrink ratio must be" in shrink_layers(teacher, view, [bad] * groups, inputs).reason
    assert "expected 5 shrink ratio entries" in shrink_layers(teacher, view, [0.5], inputs).reason


def test_ratios_above_one_never_widen():
    teacher, inputs = zoo("conv4", width_mult=0.5), example_for("conv4")
    view = NetworkView.build(teacher, inputs)
    child = shrink_layers(teacher, view, [1.5, 0.5, 1.0, 1.0, 1.0], inputs, min_width=2).child
    assert child.get_submodule("features.0").out_channels == 16


# ---------------------------------------------------- rebuild, signature, counts


@pytest.mark.parametrize("name", ["resnet18", "small_residual", "vgg11"])
def test_rebuild_reproduces_the_child_shapes_for_its_state_dict(name):
    teacher, inputs = build_any(name), example_for(name, batch=2)
    view = NetworkView.build(teacher, inputs)
    removable = [index for index, info in enumerate(view.layers) if info.removable]
    mask = [index in removable[1::2] for index in range(len(view.layers))]
    first = remove_layers(teacher, view, mask, inputs)
    second_view = NetworkView.build(first.child, inputs)
    ratios = [RATIOS[i % len(RATIOS)] for i in range(len(second_view.groups))]
    second = shrink_layers(first.child, second_view, ratios, inputs, min_width=4)
    assert second.reason is None

    buffer = io.BytesIO()
    torch.save(second.child.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    rebuilt = rebuild(build_any(name, seed=7), inputs, [first.step, second.step])
    rebuilt.load_state_dict(state, strict=True)
    assert torch.equal(run(rebuilt, inputs), run(second.child, inputs))
    assert arch_signature(rebuilt, inputs) == arch_signature(second.child, inputs)


def test_rebuild_rejects_rewrites_that_do_not_fit():
    inputs = example_for("conv4")
    with pytest.raises(CheckpointError, match="Rewrite 1"):
        rebuild(zoo("conv4"), inputs, [{"op": "shrink", "ratios": [0.5]}])
    with pytest.raises(CheckpointError, match="must be"):
        rebuild(zoo("conv4"), inputs, [{"op": "grow"}])


def test_arch_signature_depends_on_architecture_only():
    inputs = example_for("conv4")
    one, other = zoo("conv4", seed=1), zoo("conv4", seed=2)
    assert arch_signature(one, inputs) == arch_signature(other, inputs) == arch_signature(one, example_for("conv4", batch=5))
    assert arch_signature(one, inputs) != arch_signature(zoo("conv4", width_mult=0.5), inputs)

    view = NetworkView.build(one, inputs)
    half = shrink_layers(one, view, [0.5] * 5, inputs, min_width=2).child
    again = shrink_layers(other, NetworkView.build(other, inputs), [0.5] * 5, inputs, min_width=2).child
    narrower = shrink_layers(one, view, [0.25] * 5, inputs, min_width=2).child
    assert arch_signature(half, inputs) == arch_signature(again, inputs)
    assert arch_signature(half, inputs) != arch_signature(narrower, inputs)
    removed_conv = remove_layers(one, view, mask_for(view, "features.3"), inputs).child
    removed_pool = remove_layers(one, view, mask_for(view, "features.6", "features.10"), inputs).child
    assert len({arch_signature(m, inputs) for m in (one, removed_conv, removed_pool)}) == 3


def test_count_flops_of_single_layers_matches_hand_computation():
    image = torch.randn(1, 3, 10, 10)
    assert count_flops(nn.Conv2d(3, 8, 3, padding=1), image) == 8 * 10 * 10 * 3 * 3 * 3
    assert count_flops(nn.Conv2d(3, 8, 3, padding=1), torch.randn(4, 3, 10, 10)) == 8 * 10 * 10 * 27  # per example
    grouped = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)  # 5x5 output, 2 input channels per filter
    assert count_flops(grouped, torch.randn(1, 4, 10, 10)) == 8 * 5 * 5 * 2 * 9
    head = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 2))
    assert count_flops(head, torch.randn(3, 3, 2, 2)) == 12 * 5 + 5 * 2


def test_count_params_counts_each_shared_tensor_once():
    layer = nn.Linear(4, 3)
    assert count_params(nn.Sequential(layer, nn.ReLU(), layer)) == 4 * 3 + 3


# --------------------------------------------------------------- property test

PROPERTY_CASES = 1000
REMOVAL_POOL = 20  # removal children reused by remove-then-shrink cases (their views are built once)


def _check(parent: nn.Module, rewrite, inputs: torch.Tensor, output_shape: torch.Size, reasons: collections.Counter) -> None:
    if rewrite.child is None:
        assert isinstance(rewrite.reason, str) and rewrite.reason
        assert not rewrite.reason.startswith("internal error"), rewrite.reason
        assert rewrite.params == 0
        reasons[rewrite.reason.split(" (")[0].split(":")[0]] += 1
        return
    assert rewrite.reason is None
    assert run(rewrite.child, inputs).shape == output_shape
    assert rewrite.params == count_params(rewrite.child) < count_params(parent)
    reasons["accepted"] += 1


@pytest.mark.slow
@pytest.mark.parametrize("name", [*ZOO_SPECS, *CUSTOM_BUILDERS])
def test_random_action_sequences_give_a_smaller_child_or_a_reason(name):
    rng = random.Random(f"n2n-arch-{name}")
    teacher, inputs = build_any(name), example_for(name)
    before = copy.deepcopy(teacher.state_dict())
    output_shape = run(teacher, inputs).shape
    view = NetworkView.build(teacher, inputs)
    count = len(view.layers)

    def random_mask() -> list[bool]:
        p = rng.random()
        return [rng.random() < p for _ in range(count)]

    def random_ratios(groups: int) -> list[float]:
        return [rng.choice(RATIOS) for _ in range(groups)]

    pool: dict[int, tuple] = {}
    reasons: collections.Counter = collections.Counter()
    started = time.perf_counter()
    for case in range(PROPERTY_CASES):
        min_width = rng.choice((1, 4, 10))
        if case % 3 == 0:
            _check(teacher, remove_layers(teacher, view, random_mask(), inputs), inputs, output_shape, reasons)
        elif case % 3 == 1:
            rewrite = shrink_layers(teacher, view, random_ratios(len(view.groups)), inputs, min_width=min_width)
            _check(teacher, rewrite, inputs, output_shape, reasons)
        else:
            slot = rng.randrange(REMOVAL_POOL)
            if slot not in pool:
                first = remove_layers(teacher, view, random_mask(), inputs)
                pool[slot] = (first, NetworkView.build(first.child, inputs) if first.child is not None else None)
            first, child_view = pool[slot]
            if first.child is None:
                _check(teacher, first, inputs, output_shape, reasons)
                continue
            ratios = random_ratios(len(child_view.groups))
            second = shrink_layers(first.child, child_view, ratios, inputs, min_width=min_width)
            _check(first.child, second, inputs, output_shape, reasons)
    elapsed = time.perf_counter() - started

    assert sum(reasons.values()) == PROPERTY_CASES
    assert reasons["accepted"] > PROPERTY_CASES // 3, reasons
    assert all(torch.equal(before[key], value) for key, value in teacher.state_dict().items())
    print(f"{name}: {PROPERTY_CASES} cases in {elapsed:.1f} s, outcomes {dict(reasons)}")

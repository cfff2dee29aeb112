"""Models written the way users write them (torchvision and timm style), rewritten by N2N.

Every rewrite gives a child that trains (forward and backward) or a rejection
with its reason, never an exception; removal finds valid children wherever the
view offers a removable unit.
"""

from __future__ import annotations

import collections
import random

import pytest
import torch
from torch import nn

from custom_models import SHORT_COMPRESS, SEResNet, USER_MODELS
from n2n.arch import NetworkView, rebuild, remove_layers, shrink_layers

pytestmark = pytest.mark.usefixtures("one_thread")

BUILDERS = USER_MODELS
RATIOS = (0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0)


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return BUILDERS[name](), torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def train_step(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """One SGD step in training mode, as the distillation would take it; the logits."""
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    logits = model(inputs)
    logits.logsumexp(1).mean().backward()
    optimiser.step()
    return logits


def check(parent: nn.Module, rewrite, inputs: torch.Tensor, outcomes: collections.Counter) -> None:
    if rewrite.child is None:
        assert isinstance(rewrite.reason, str) and rewrite.reason
        assert not rewrite.reason.startswith("internal error"), rewrite.reason
        outcomes[rewrite.reason.split(":")[0]] += 1
        return
    logits = train_step(rewrite.child, inputs)
    assert logits.shape == (inputs.shape[0], 10)
    assert rewrite.params < sum(p.numel() for p in parent.parameters())
    outcomes["accepted"] += 1


def lone_removals(view: NetworkView) -> list[list[bool]]:
    """One mask per removable entry, removing that entry alone."""
    return [[index == chosen for index in range(len(view.layers))] for chosen, info in enumerate(view.layers) if info.removable]


# ------------------------------------------------------------- in-place ReLU


def test_removed_block_of_an_inplace_relu_resnet_trains():
    teacher, inputs = build("torchvision_resnet18")
    view = NetworkView.build(teacher, inputs)
    rewrite = remove_layers(teacher, view, [info.name == "layer1.1" for info in view.layers], inputs)

    assert rewrite.child is not None, rewrite.reason
    train_step(rewrite.child, inputs)
    assert all(not getattr(module, "inplace", False) for module in rewrite.child.modules())
    assert all(getattr(module, "inplace", True) for module in teacher.modules() if isinstance(module, nn.ReLU))


def test_a_child_that_fails_backward_is_rejected_with_the_reason():
    class OverwritesSaved(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.extra = nn.Conv2d(8, 8, 3, padding=1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            h = self.extra(torch.sigmoid(self.conv(x)))
            y = h.sigmoid()
            y.mul_(2)  # sigmoid's backward needs its output: overwritten
            return self.fc(y.mean((2, 3)))

    teacher, inputs = OverwritesSaved(), build("groupnorm")[1]
    view = NetworkView.build(teacher, inputs)
    rewrite = shrink_layers(teacher, view, [0.5] * len(view.groups), inputs, min_width=1)

    assert rewrite.child is None
    assert rewrite.reason.startswith("backward failed: RuntimeError"), rewrite.reason


# ------------------------------------------------------------- depthwise convolutions


def test_mobilenet_blocks_with_a_sum_are_the_units_and_expansions_into_depthwise_convs_stay():
    teacher, inputs = build("mobilenet_v2")
    view = NetworkView.build(teacher, inputs)
    removable = {info.name for info in view.layers if info.removable}

    assert {"features.3", "features.5", "features.6"} <= removable  # inverted residuals with their sum
    assert "features.4" not in {info.name for info in view.layers}  # no sum: not a block
    # 1x1 expansions feed a depthwise conv; projections feed the next block's sum
    assert not removable & {"features.4.conv.0.0", "features.4.conv.2", "features.2.conv.2"}
    assert "features.7.conv.1.0" in removable  # stride-1 depthwise conv: same width in and out


def test_a_depthwise_conv_shrinks_with_its_producer():
    teacher, inputs = build("mobilenet_v2")
    view = NetworkView.build(teacher, inputs)
    index = next(i for i, group in enumerate(view.groups) if "features.4.conv.0.0" in group.layers)
    ratios = [1.0] * len(view.groups)
    ratios[index] = 0.5
    child = shrink_layers(teacher, view, ratios, inputs).child

    assert "features.4.conv.1.0" in view.groups[index].layers
    depthwise = child.get_submodule("features.4.conv.1.0")
    assert depthwise.in_channels == depthwise.out_channels == depthwise.groups == 24
    assert child.get_submodule("features.4.conv.2").in_channels == 24


def test_a_grouped_conv_keeps_the_width_of_its_channels():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, groups=4), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    inputs = build("groupnorm")[1]
    view = NetworkView.build(model, inputs)

    assert not any({"0", "2"} & set(group.layers) for group in view.groups)
    assert any("4" in group.layers for group in view.groups)
    outcomes: collections.Counter = collections.Counter()
    check(model, shrink_layers(model, view, [0.5] * len(view.groups), inputs), inputs, outcomes)
    check(model, remove_layers(model, view, [info.name == "2" for info in view.layers], inputs), inputs, outcomes)
    assert outcomes["accepted"] == 2, outcomes


# ------------------------------------------------------------- GroupNorm


def test_shrunk_groupnorm_widths_are_multiples_of_its_groups():
    teacher, inputs = build("groupnorm")
    view = NetworkView.build(teacher, inputs)
    rewrite = shrink_layers(teacher, view, [0.3] * len(view.groups), inputs, min_width=1)

    assert [group.multiple for group in view.groups] == [4, 4, 8, 8, 1]
    norms = [module for module in rewrite.child.modules() if isinstance(module, nn.GroupNorm)]
    assert [norm.num_channels for norm in norms] == [8, 8, 16, 16]  # 0.3 x 16 = 5 -> 8; 0.3 x 32 = 10 -> 16
    assert rewrite.child.get_submodule("body.14").out_channels == 7
    train_step(rewrite.child, inputs)


def test_removing_a_conv_removes_its_groupnorm_and_activation():
    teacher, inputs = build("groupnorm")
    view = NetworkView.build(teacher, inputs)
    rewrite = remove_layers(teacher, view, [info.name == "body.7" for info in view.layers], inputs)

    called = {str(node.target) for node in rewrite.child.graph.nodes if node.op == "call_module"}
    assert not {"body.7", "body.8", "body.9"} & called
    assert rewrite.child.get_submodule("body.10").in_channels == 16
    train_step(rewrite.child, inputs)


# ------------------------------------------------------------- DenseNet concatenation


def test_a_dense_layer_is_the_removable_unit_and_its_readers_take_fewer_channels():
    teacher, inputs = build("densenet")
    view = NetworkView.build(teacher, inputs)
    dense = [info.name for info in view.layers if info.kind == "block"]
    assert dense == ["features.1", "features.2", "features.3", "features.8", "features.9", "features.10"]
    assert all(info.removable for info in view.layers if info.kind == "block")
    assert not any(info.removable for info in view.layers if info.name.startswith("features.1."))

    mask = [info.name in ("features.2", "features.9") for info in view.layers]
    child = remove_layers(teacher, view, mask, inputs).child
    assert child is not None
    names = {name for name, _ in child.named_modules()}
    assert not any(name.startswith(("features.2.", "features.9.")) for name in names)
    growth = teacher.features[1].conv2.out_channels
    # the later layers of each block, the transition and the head read one layer's growth fewer
    for reader in ("features.3.conv1", "features.6", "features.10.conv1"):
        assert child.get_submodule(reader).in_channels == teacher.get_submodule(reader).in_channels - growth
    assert child.get_submodule("classifier").in_features == teacher.classifier.in_features - growth
    # the transition keeps exactly the weights and norm statistics of the channels it still reads
    block_input = teacher.features[1].norm1.num_features
    kept = [*range(block_input + growth), *range(block_input + 2 * growth, block_input + 3 * growth)]
    assert torch.equal(child.get_submodule("features.6").weight, teacher.features[6].weight[:, kept])
    assert torch.equal(child.get_submodule("features.4").running_var, teacher.features[4].running_var[kept])
    assert train_step(child, inputs).shape == (2, 10)


# ------------------------------------------------------------- squeeze-and-excitation, F.dropout


def test_se_blocks_reading_their_shape_with_size_are_removable():
    teacher, inputs = build("se_resnet")
    view = NetworkView.build(teacher, inputs)

    blocks = [info for info in view.layers if info.kind == "block"]
    assert len(blocks) == 6 and all(info.removable for info in blocks)
    assert any("blocks.1.se.fc.0" in group.layers for group in view.groups)


def test_functional_dropout_follows_the_child_mode_after_removal_and_rebuild():
    teacher, inputs = build("se_resnet")
    teacher.eval()  # traced in eval mode: F.dropout(training=self.training) is traced as training=False
    view = NetworkView.build(teacher, inputs)
    rewrite = remove_layers(teacher, view, [info.name == "blocks.1" for info in view.layers], inputs)
    child = rewrite.child

    assert child(inputs).equal(child(inputs))
    child.train()
    torch.manual_seed(0)
    assert not child(inputs).equal(child(inputs))
    torch.manual_seed(0)
    fresh = SEResNet()  # a fresh instance is in training mode: traced as training=True
    rebuilt = rebuild(fresh, inputs, [rewrite.step])
    rebuilt.load_state_dict(child.state_dict(), strict=True)
    assert [name for name, _ in rebuilt.named_modules()] == [name for name, _ in child.named_modules()]
    assert rebuilt.eval()(inputs).equal(child.eval()(inputs))


# ------------------------------------------------------------- every model


@pytest.mark.parametrize("name", BUILDERS)
def test_every_lone_removable_unit_gives_a_child_that_trains_unless_it_holds_no_parameter(name):
    teacher, inputs = build(name)
    view = NetworkView.build(teacher, inputs)
    masks = lone_removals(view)

    assert masks, "the view offers no removable unit"
    children = 0
    for mask in masks:
        rewrite = remove_layers(teacher, view, mask, inputs)
        if rewrite.child is None:  # a pool alone holds no parameter: the only fair rejection
            assert rewrite.reason.startswith("not smaller"), (view.layers[mask.index(True)].name, rewrite.reason)
            continue
        train_step(rewrite.child, inputs)
        children += 1
    assert children > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILDERS)
def test_random_action_sequences_give_a_child_that_trains_or_a_reason(name, cases=1000):
    rng = random.Random(f"n2n-user-{name}")
    teacher, inputs = build(name)
    view = NetworkView.build(teacher, inputs)
    outcomes: collections.Counter = collections.Counter()
    for case in range(cases):
        if case % 2 == 0:
            p = rng.random()
            rewrite = remove_layers(teacher, view, [rng.random() < p for _ in view.layers], inputs)
        else:
            ratios = [rng.choice(RATIOS) for _ in view.groups]
            rewrite = shrink_layers(teacher, view, ratios, inputs, min_width=rng.choice((1, 4, 10)))
        check(teacher, rewrite, inputs, outcomes)

    assert sum(outcomes.values()) == cases
    assert outcomes["accepted"] > cases // 2, outcomes


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILDERS)
def test_shrinking_removal_children_gives_a_child_that_trains_or_a_reason(name, parents=10, shrinks=3, tries=200):
    """Stage 2 starts from a removal child: a traced GraphModule, not the user's class. Random
    removals that are refused (e.g. a pool removed before a fixed-size head, which grows the
    net) still give their reason; the shrinks of the accepted ones mostly train."""
    rng = random.Random(f"n2n-user-two-stages-{name}")
    teacher, inputs = build(name)
    view = NetworkView.build(teacher, inputs)
    removals: collections.Counter = collections.Counter()
    shrunk: collections.Counter = collections.Counter()
    for _ in range(tries):
        p = rng.random()
        first = remove_layers(teacher, view, [rng.random() < p for _ in view.layers], inputs)
        check(teacher, first, inputs, removals)
        if first.child is None:
            continue
        child_view = NetworkView.build(first.child, inputs)
        for _ in range(shrinks):
            ratios = [rng.choice(RATIOS) for _ in child_view.groups]
            check(first.child, shrink_layers(first.child, child_view, ratios, inputs, min_width=rng.choice((1, 4))), inputs, shrunk)
        if removals["accepted"] == parents:
            break

    assert removals["accepted"] == parents, removals
    assert shrunk["accepted"] > (parents * shrinks) // 2, shrunk


def labelled_by(model: nn.Module) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Random images the model labels itself: a training and a validation split."""
    images = torch.randn(96, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        labels = model.eval()(images).argmax(1)
    return (images[:64], labels[:64]), (images[64:], labels[64:])


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_short_compress_with_a_4x_budget_meets_it(name):
    from n2n import compress
    from n2n.arch import count_params

    model, _ = build(name)
    train, val = labelled_by(model)
    result = compress(model, train, val, **SHORT_COMPRESS)
    assert count_params(result.student) <= count_params(model) // 4
    assert result.student(train[0][:2]).shape == (2, 10)


def test_a_budget_out_of_reach_at_the_width_floor_says_to_lower_it():
    from n2n import compress
    from n2n.errors import N2NError

    model, _ = build("lenet")
    with pytest.raises(N2NError, match=r"compression 4 .*lower min_width \(now 10\)"):
        compress(model, *labelled_by(model), **{**SHORT_COMPRESS, "min_width": 10})

"""What pruning users ask for: ignored_layers (left exactly as they are) and round_to
(kept widths rounded to a multiple), in the network view, the search, the CLI and config."""
from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import n2n
from custom_models import SHORT_COMPRESS, USER_MODELS
from n2n.arch import NetworkView, rebuild, remove_layers, shrink_layers
from n2n.config import SearchConfig, from_dict
from n2n.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

# One layer in the middle of each model, with shrinkable channels on both sides of it.
MIDDLE = {"torchvision_resnet18": "layer2.0.conv1", "mobilenet_v2": "features.3", "groupnorm": "body.3",
          "se_resnet": "blocks.2.conv2", "densenet": "features.8", "functional_vgg": "convs.2", "lenet": "features.3"}
RATIOS = (0.25, 0.5, 0.75, 1.0)


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return USER_MODELS[name](), torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def shapes_under(model: nn.Module, prefix: str) -> dict[str, tuple[int, ...]]:
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return {name: tuple(t.shape) for name, t in tensors if name.startswith(prefix + ".")}


def random_children(model: nn.Module, inputs: torch.Tensor, count: int, **options) -> list[nn.Module]:
    """Children of random removals, then random shrinks of the teacher and of those children."""
    rng, children = random.Random(0), []
    view = NetworkView.build(model, inputs, **options)
    for _ in range(count):
        removed = remove_layers(model, view, [rng.random() < 0.3 for _ in view.layers], inputs)
        parent = removed.child if removed.child is not None else model
        children += [removed.child] if removed.child is not None else []
        parent_view = NetworkView.build(parent, inputs, **options)
        shrunk = shrink_layers(parent, parent_view, [rng.choice(RATIOS) for _ in parent_view.groups], inputs)
        children += [shrunk.child] if shrunk.child is not None else []
    return children


@pytest.mark.parametrize("name", sorted(USER_MODELS))
def test_an_ignored_layer_keeps_its_shape_in_every_child(name):
    model, inputs = build(name)
    layer = MIDDLE[name]
    kept = shapes_under(model, layer)
    view = NetworkView.build(model, inputs, ignored_layers=(layer,))
    assert kept and all(not info.removable for info in view.layers if info.name.startswith(layer))
    children = random_children(model, inputs, 12, ignored_layers=(layer,))
    assert len(children) >= 6
    for child in children:
        assert shapes_under(child, layer) == kept
    free = NetworkView.build(model, inputs)  # without it, some groups pass through the layer
    assert len(view.groups) < len(free.groups)


@pytest.mark.parametrize("name", sorted(USER_MODELS))
def test_round_to_gives_widths_that_are_multiples(name):
    model, inputs = build(name)
    teacher = {key: module for key, module in model.named_modules() if isinstance(module, nn.Conv2d)}
    view = NetworkView.build(model, inputs, round_to=8)
    assert view.groups and all(group.multiple % 8 == 0 for group in view.groups)
    children = random_children(model, inputs, 8, round_to=8)
    assert children
    for child in children:
        for key, module in child.named_modules():
            if isinstance(module, nn.Conv2d) and module.out_channels != teacher[key].out_channels:
                assert module.out_channels % 8 == 0, (key, module.out_channels)


def test_a_compressed_student_keeps_its_ignored_layer_and_rounded_widths_and_reloads(tmp_path):
    model, _ = build("groupnorm")
    images = torch.randn(96, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        labels = model.eval()(images).argmax(1)
    result = n2n.compress(model, (images[:64], labels[:64]), (images[64:], labels[64:]),
                          ignored_layers=("head.2", "body.3"), round_to=4, **{**SHORT_COMPRESS, "compression": 2})
    student = result.student
    assert shapes_under(student, "head.2") == shapes_under(model, "head.2")
    assert shapes_under(student, "body.3") == shapes_under(model, "body.3")
    assert all(module.out_channels % 4 == 0 for module in student.modules() if isinstance(module, nn.Conv2d))
    assert all(step["ignored_layers"] == ["head.2", "body.3"] and step["round_to"] == 4 for step in result.rewrites)

    loaded = n2n.load_student(n2n.save_student(result, tmp_path / "student.pt"), model=USER_MODELS["groupnorm"]())
    with torch.no_grad():
        torch.testing.assert_close(loaded(images[:3]), student.eval()(images[:3]))


def test_rewrites_recorded_with_options_replay_with_them():
    model, inputs = build("torchvision_resnet18")
    view = NetworkView.build(model, inputs, ignored_layers=("layer1",), round_to=8)
    child = shrink_layers(model, view, [0.5] * len(view.groups), inputs)
    assert child.step["ignored_layers"] == ["layer1"] and child.step["round_to"] == 8
    again = rebuild(USER_MODELS["torchvision_resnet18"](), inputs, [child.step])
    assert [tuple(t.shape) for t in again.state_dict().values()] == \
        [tuple(t.shape) for t in child.child.state_dict().values()]


def test_an_unknown_ignored_layer_is_one_clear_error():
    model, inputs = build("groupnorm")
    with pytest.raises(ConfigError, match=r"^ignored_layers: 'classifier' is not a module of GroupNormNet "
                                          r"\(its modules are named like body, body.0"):
        n2n.compress(model, (inputs, torch.zeros(2, dtype=torch.long)), (inputs, torch.zeros(2, dtype=torch.long)),
                     ignored_layers=["classifier"], **SHORT_COMPRESS)


@pytest.mark.parametrize("options, message", [
    ({"round_to": 0}, "round-to must be a whole number from 1 to 4096, got 0"),
    ({"ignored_layers": ["fc", ""]}, "ignored-layers must be module names"),
])
def test_bad_pruning_options_are_refused_by_the_config(options, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(SearchConfig, options, "options").validate()


def test_the_compress_flags_reach_the_config():
    from n2n.cli import build_parser, search_options

    args = build_parser().parse_args(["compress", "--teacher", "t.pt", "--out", "run", "--ignored-layers",
                                      "fc,layer4.1", "--round-to", "8"])
    config = from_dict(SearchConfig, search_options(args), "options").validate()
    assert config.ignored_layers == ("fc", "layer4.1") and config.round_to == 8
    assert config.view_options == {"ignored_layers": ("fc", "layer4.1"), "round_to": 8}

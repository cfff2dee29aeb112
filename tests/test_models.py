"""Model zoo: shapes, gradients, paper parameter counts, registry and traceability."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch_pruning as tp
from torch import fx, nn

from n2n.errors import ModelError
from n2n.models import (
    BasicBlock,
    conv4,
    count_parameters,
    create_model,
    list_models,
    model_from_spec,
    model_spec,
    register_model,
    resnet18,
    vgg19,
)
from n2n.models import registry

ZOO = ["conv4", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34"]
INPUTS = [(1, 28), (3, 32)]  # (channels, side): MNIST-like and CIFAR-like images


def small_kwargs(name: str, in_channels: int, num_classes: int = 10) -> dict:
    """Options for a fast version of ``name``: narrow widths for VGG/ResNet."""
    kwargs = {"in_channels": in_channels, "num_classes": num_classes}
    if name == "conv4":
        kwargs["widths"] = [4, 4, 8, 8, 16]
    else:
        kwargs["width_mult"] = 0.125
    return kwargs


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def test_every_zoo_model_is_registered():
    assert list_models() == sorted(ZOO)


@pytest.mark.parametrize("in_channels,side", INPUTS)
@pytest.mark.parametrize("name", ZOO)
def test_forward_backward_gives_finite_nonzero_gradients(name, in_channels, side):
    torch.manual_seed(0)
    model = create_model(name, **small_kwargs(name, in_channels, num_classes=7))
    images = torch.randn(2, in_channels, side, side)
    logits = model(images)
    assert logits.shape == (2, 7)
    nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("in_channels,side", INPUTS)
@pytest.mark.parametrize("name", ZOO)
def test_full_width_forward_shape(name, in_channels, side):
    # Full width for every model and both input sizes runs in about a second in all.
    model = create_model(name, in_channels=in_channels, num_classes=10).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, side, side))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "name,expected",
    [("vgg19", 20.0e6), ("resnet18", 11.17e6), ("resnet34", 21.28e6)],
)
def test_full_width_parameter_counts_match_the_paper(name, expected):
    count = count_parameters(create_model(name, in_channels=3, num_classes=10))
    assert count == pytest.approx(expected, rel=0.02)


def test_exact_parameter_counts_of_cifar_models():
    # The standard CIFAR implementations: conv without bias before BN.
    assert count_parameters(resnet18()) == 11_173_962
    assert count_parameters(create_model("resnet34")) == 21_282_122
    assert count_parameters(vgg19()) == 20_035_018


def test_conv4_layout_and_parameter_count():
    model = conv4()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert [(l.in_features, l.out_features) for l in linears] == [(64 * 4 * 4, 128), (128, 10)]
    conv_weights = 1 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 64 * 64 * 9
    batchnorm = 2 * (32 + 32 + 64 + 64)
    fully_connected = 1024 * 128 + 128 + 128 * 10 + 10
    assert count_parameters(model) == conv_weights + batchnorm + fully_connected
    assert 100_000 < count_parameters(model) < 500_000


def test_conv4_explicit_widths_and_width_mult():
    model = conv4(widths=[8, 8, 16, 16, 24], in_channels=3, num_classes=5)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m.out_features for m in model.modules() if isinstance(m, nn.Linear)]
    assert convs == [8, 8, 16, 16] and linears == [24, 5]
    halved = conv4(widths=[8, 8, 16, 16, 24], width_mult=0.5)
    assert [m.out_channels for m in halved.modules() if isinstance(m, nn.Conv2d)] == [4, 4, 8, 8]


@pytest.mark.parametrize("name", ["vgg11", "vgg19", "resnet18", "resnet34"])
def test_width_mult_scales_every_width_and_never_reaches_zero(name):
    full = create_model(name)
    tiny = create_model(name, width_mult=0.001)
    full_convs = [m.out_channels for m in full.modules() if isinstance(m, nn.Conv2d)]
    tiny_convs = [m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d)]
    half_convs = [
        m.out_channels for m in create_model(name, width_mult=0.5).modules() if isinstance(m, nn.Conv2d)
    ]
    assert half_convs == [w // 2 for w in full_convs]
    assert tiny_convs == [1] * len(full_convs)
    assert count_parameters(tiny) < count_parameters(full) / 1000


def test_resnet_blocks_use_projection_only_when_shape_changes():
    model = resnet18(width_mult=0.125)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 8
    projections = [len(block.shortcut) > 0 for block in blocks]
    # The first block of stages 2-4 changes width and stride; every other block is identity.
    assert projections == [False, False, True, False, True, False, True, False]
    strides = [block.conv1.stride[0] for block in blocks]
    assert strides == [1, 1, 2, 1, 2, 1, 2, 1]


def test_unknown_name_lists_known_models():
    with pytest.raises(ModelError) as caught:
        create_model("resnet19")
    message = str(caught.value)
    assert "resnet19" in message
    for name in ZOO:
        assert name in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "name,kwargs,fragment",
    [
        ("vgg19", {"widths": [1, 2]}, "widths"),
        ("conv4", {"depth": 3}, "depth"),
        ("resnet18", {"width_mult": 0}, "width_mult"),
        ("resnet18", {"width_mult": float("nan")}, "width_mult"),
        ("vgg11", {"num_classes": 0}, "num_classes"),
        ("vgg11", {"in_channels": 2.5}, "in_channels"),
        ("conv4", {"widths": [8, 8, 8]}, "widths"),
        ("conv4", {"widths": [8, 8, 8, 8, -1]}, "widths"),
        ("conv4", {"num_classes": torch.tensor(3)}, "JSON"),
    ],
)
def test_bad_options_raise_one_line_model_error(name, kwargs, fragment):
    with pytest.raises(ModelError) as caught:
        create_model(name, **kwargs)
    message = str(caught.value)
    assert fragment in message and repr(name) in message
    assert "\n" not in message


def test_unknown_option_message_lists_accepted_options():
    with pytest.raises(ModelError, match=r"accepts: in_channels, num_classes, width_mult"):
        create_model("vgg19", widths=[1])


def test_builders_reject_positional_arguments():
    with pytest.raises(ModelError, match="keyword arguments only"):
        vgg19(3)


@pytest.mark.parametrize("name", ZOO)
def test_spec_round_trips_through_json(name):
    model = create_model(name, **small_kwargs(name, in_channels=1, num_classes=4))
    spec = model_spec(model)
    assert spec["name"] == name
    reloaded = json.loads(json.dumps(spec))
    rebuilt = create_model(reloaded["name"], **reloaded["kwargs"])
    assert state_shapes(rebuilt) == state_shapes(model)
    assert state_shapes(model_from_spec(reloaded)) == state_shapes(model)


def test_spec_records_defaults_and_normalises_tuples():
    model = conv4(widths=(4, 4, 8, 8, 16))
    assert model.n2n_spec == {
        "name": "conv4",
        "kwargs": {"in_channels": 1, "num_classes": 10, "widths": [4, 4, 8, 8, 16], "width_mult": 1.0},
    }
    assert resnet18().n2n_spec["kwargs"] == {"in_channels": 3, "num_classes": 10, "width_mult": 1.0}


def test_model_spec_is_a_copy():
    model = conv4(widths=[4, 4, 8, 8, 16])
    spec = model_spec(model)
    spec["kwargs"]["widths"][0] = 99
    assert model.n2n_spec["kwargs"]["widths"][0] == 4


def test_model_spec_survives_deepcopy_and_weight_loading():
    model = vgg19(width_mult=0.125)
    clone = copy.deepcopy(model)
    clone.load_state_dict(create_model("vgg19", width_mult=0.125).state_dict())
    assert model_spec(clone) == model_spec(model)


def test_model_spec_refuses_foreign_and_rewritten_models():
    with pytest.raises(ModelError, match="no zoo spec"):
        model_spec(nn.Linear(2, 2))
    model = vgg19(width_mult=0.125)
    model.classifier = nn.Linear(model.classifier.in_features, 3)
    with pytest.raises(ModelError, match="rewritten"):
        model_spec(model)


@pytest.mark.parametrize("spec", [None, "vgg19", {"name": "vgg19"}, {"name": 3, "kwargs": {}}])
def test_model_from_spec_rejects_malformed_specs(spec):
    with pytest.raises(ModelError, match="spec"):
        model_from_spec(spec)


def test_register_model_adds_a_buildable_model(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model("tiny_linear")
    def tiny_linear(*, features: int = 3) -> nn.Module:
        return nn.Linear(features, 2)

    assert "tiny_linear" in list_models()
    model = create_model("tiny_linear", features=5)
    assert model.in_features == 5
    assert model_spec(model) == {"name": "tiny_linear", "kwargs": {"features": 5}}
    with pytest.raises(ModelError, match="already registered"):

        @register_model("tiny_linear")
        def other(*, features: int = 3) -> nn.Module:
            return nn.Linear(features, 2)


def test_register_model_rejects_empty_name():
    with pytest.raises(ModelError, match="non-empty"):
        register_model("  ")


def test_count_parameters_trainable_only():
    model = conv4(widths=[4, 4, 8, 8, 16])
    total = count_parameters(model)
    for param in model.classifier.parameters():
        param.requires_grad_(False)
    frozen = sum(p.numel() for p in model.classifier.parameters())
    assert count_parameters(model, trainable_only=True) == total - frozen
    assert count_parameters(model) == total


@pytest.mark.parametrize("in_channels,side", INPUTS)
@pytest.mark.parametrize("name", ZOO)
def test_fx_trace_reproduces_the_model(name, in_channels, side):
    torch.manual_seed(0)
    model = create_model(name, **small_kwargs(name, in_channels)).eval()
    traced = fx.symbolic_trace(model)
    images = torch.randn(2, in_channels, side, side)
    with torch.no_grad():
        torch.testing.assert_close(traced(images), model(images))
    additions = [n for n in traced.graph.nodes if n.op == "call_function" and "add" in str(n.target)]
    expected_blocks = sum(isinstance(m, BasicBlock) for m in model.modules())
    assert len(additions) == expected_blocks  # one residual addition per block, none elsewhere


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", ZOO)
def test_torch_pruning_traces_and_prunes_coupled_channels(name):
    torch.manual_seed(0)
    model = create_model(name, **small_kwargs(name, in_channels=3)).eval()
    images = torch.randn(2, 3, 32, 32)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=images)
    conv = first_conv(model)
    width = conv.out_channels
    group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[0, 1])
    assert graph.check_pruning_group(group)
    before = count_parameters(model)
    group.prune()
    assert conv.out_channels == width - 2
    assert count_parameters(model) < before
    if name.startswith("resnet"):
        # The stem feeds identity shortcuts, so every layer1 block output shrinks with it.
        assert all(block.bn2.num_features == width - 2 for block in model.layer1)
    with torch.no_grad():
        assert model(images).shape == (2, 10)

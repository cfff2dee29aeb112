"""Model zoo: conv4, VGG-11/13/16/19 and ResNet-18/34 for 28x28 and 32x32 images.

Importing this package registers every zoo model with the registry.
"""

from n2n.models.conv4 import Conv4, conv4
from n2n.models.registry import create_model, get_model_builder, list_models, model_from_spec, model_spec, register_model
from n2n.models.resnet import BasicBlock, ResNet, resnet18, resnet34
from n2n.models.stats import count_parameters
from n2n.models.vgg import VGG, vgg11, vgg13, vgg16, vgg19

__all__ = [
    "BasicBlock",
    "Conv4",
    "ResNet",
    "VGG",
    "conv4",
    "count_parameters",
    "create_model",
    "get_model_builder",
    "list_models",
    "model_from_spec",
    "model_spec",
    "register_model",
    "resnet18",
    "resnet34",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
]

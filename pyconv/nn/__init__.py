"""pyconv.nn: layers, containers, losses and initialisation, with PyTorch's names.

Modules are thin wrappers over :mod:`pyconv.functional`: ``forward`` keeps a
cache, ``backward(grad_output)`` returns the input gradient and accumulates
``Parameter.grad``. Parameter names and shapes match PyTorch's, so a PyTorch
state dict of the same architecture loads with ``load_state_dict``.
"""
from . import init
from .layers import (
    ELU, GELU, AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d,
    Dropout, Flatten, LeakyReLU, Linear, LogSoftmax, Maxout, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh,
)
from .loss import CrossEntropyLoss, MSELoss, NLLLoss
from .module import Identity, Module, Residual, Sequential
from .parameter import Parameter

__all__ = [
    "init", "Parameter", "Module", "Sequential", "Residual", "Identity",
    "Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
    "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "GELU", "Maxout", "Softmax", "LogSoftmax",
    "Flatten", "Dropout", "BatchNorm1d", "BatchNorm2d",
    "CrossEntropyLoss", "MSELoss", "NLLLoss",
]

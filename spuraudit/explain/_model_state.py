"""Run a model in eval mode for an explanation and leave it exactly as it was found."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def explanation_mode(model: nn.Module, params_require_grad: bool) -> Iterator[nn.Module]:
    """Eval mode with every parameter's `requires_grad` set to `params_require_grad`, undone on exit.

    Eval mode matters beyond determinism: in train mode every forward pass would update batch-norm
    running statistics, so a 100-step feature attack would quietly change the model. The training
    flag of every submodule, each parameter's `requires_grad` and each parameter's `.grad` (which
    CAM libraries zero and refill) are all restored, also when the body raises.
    """
    was_training = {module: module.training for module in model.modules()}
    params = list(model.parameters())
    required_grad = [p.requires_grad for p in params]
    # Cloned because a `zero_grad(set_to_none=False)` inside the body would zero them in place.
    saved_grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(params_require_grad)
    try:
        yield model
    finally:
        for module, training in was_training.items():
            module.training = training
        for p, required, grad in zip(params, required_grad, saved_grads):
            p.requires_grad_(required)
            p.grad = grad


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    for tensor in model.parameters():
        return tensor.dtype
    return torch.float32

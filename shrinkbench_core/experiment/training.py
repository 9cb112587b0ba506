"""Training loops, optimizers and schedules shared by dense training and fine-tuning."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from shrinkbench_core.config import OptimizerConfig, TrainingConfig
from shrinkbench_core.experiment.progress import progress


def make_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW with the configured settings."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    optimizer = torch.optim.Adam if config.name == "adam" else torch.optim.AdamW
    return optimizer(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainingConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-epoch learning-rate schedule: constant, cosine to zero, or step decay."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, config.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    description: str = "train",
    quiet: bool = False,
    on_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns exact mean loss and top-1 over all examples.

    ``on_step`` is called right after every ``optimizer.step()`` (e.g. to record
    weights for rewinding or to prune gradually).
    """
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for inputs, targets in progress(loader, description, quiet):
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        outputs = model(inputs)
        loss = nn.functional.cross_entropy(outputs, targets)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step()
        loss_sum += loss.item() * len(targets)
        correct += int((outputs.argmax(1) == targets).sum())
        seen += len(targets)
    return {"train_loss": loss_sum / max(seen, 1), "train_top1": correct / max(seen, 1)}


def seeded_loader(dataset, batch_size: int, workers: int, seed: int, shuffle: bool) -> DataLoader:
    """A loader whose order depends only on ``seed`` (set per epoch for resumability)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        drop_last=False,
    )

"""The one training loop of the runner, its optimizers and learning-rate schedules.

Dense training, the training between iterative pruning rounds and fine-tuning all run
:func:`train_epochs`; what differs between them (validation, checkpoints, rewind
recording, pruning during training, events) is passed in as callbacks, so the loop reads
top to bottom.

Model outputs may be class scores ``(N, C)`` with labels ``(N,)``, or sequence scores
``(N, ..., C)`` with labels ``(N, ...)`` (a language model's ``(N, T, vocab)`` logits):
the leading dimensions are flattened, so loss and accuracy are per token. Labels equal to
``-100`` (padding, as in Hugging Face) are left out of both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from shrinkbench_core.config import OptimizerConfig, TrainingConfig
from shrinkbench_core.experiment.progress import progress
from shrinkbench_core.experiment.train_options import current_training_options

IGNORE_INDEX = -100


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


def scores_and_labels(outputs: Any, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class scores ``(M, C)`` and labels ``(M,)``: leading dimensions flattened.

    ``outputs`` is a tensor, a tuple whose first item is one, or an object with
    ``.logits``; ``(N, C)`` with ``(N,)`` and ``(N, T, C)`` with ``(N, T)`` both work.
    """
    from shrinkbench_core.metrics.accuracy import logits_of

    scores = logits_of(outputs)
    if scores.dim() != targets.dim() + 1 or scores.shape[:-1] != targets.shape:
        raise ValueError(
            f"model outputs of shape {tuple(scores.shape)} do not fit labels of shape "
            f"{tuple(targets.shape)}: expected (N, ..., classes) scores for (N, ...) labels"
        )
    return scores.reshape(-1, scores.shape[-1]), targets.reshape(-1)


@dataclass
class TrainingStep:
    """What a per-step callback sees, right after ``optimizer.step()``.

    ``global_step`` counts the optimizer steps of the training stage (1 after the first,
    continuing across epochs and resumed segments). Every parameter's ``.grad`` still holds
    this step's dense gradient (pruned entries included) until the next step begins.
    """

    global_step: int
    epoch: int  # 0-based epoch of the stage
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss: torch.Tensor  # the step's loss, detached (reading it waits for the device)


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    description: str = "train",
    quiet: bool = False,
    on_step: Callable[[torch.Tensor], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns exact mean loss and top-1 over all examples (tokens).

    ``on_step(loss)`` is called right after every ``optimizer.step()`` with the step's
    detached loss (e.g. to record weights for rewinding or to change the masks).
    """
    model.train()
    options = current_training_options()  # precision, channels-last, DDP (train_options.py)
    forward = options.forward_module(model, device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = torch.zeros((), dtype=torch.int64, device=device)
    for inputs, targets in progress(loader, description, quiet):
        inputs, targets = options.inputs(inputs.to(device)), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        with options.autocast(device):
            scores, labels = scores_and_labels(forward(inputs), targets)
            loss = nn.functional.cross_entropy(scores, labels, ignore_index=IGNORE_INDEX)
        options.step(loss, optimizer, device)
        loss = loss.detach()
        if on_step is not None:
            on_step(loss)
        counted = labels != IGNORE_INDEX
        loss_sum += loss.double() * counted.sum()
        correct += ((scores.detach().argmax(-1) == labels) & counted).sum()
        seen += counted.sum()
    total = max(int(seen), 1)
    return {"train_loss": float(loss_sum) / total, "train_top1": int(correct) / total}


EpochEnd = Callable[[dict[str, Any], float], bool | None]


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    epochs: int,
    loader_for: Callable[[int], Iterable],
    device: torch.device,
    label: str,
    quiet: bool = False,
    start_epoch: int = 0,
    start_step: int = 0,
    on_step: Callable[[TrainingStep], None] | None = None,
    on_epoch_end: EpochEnd | None = None,
) -> list[dict[str, Any]]:
    """Train epochs ``start_epoch .. epochs - 1``; return one row per epoch trained.

    Each row is ``{"epoch", "lr", "train_loss", "train_top1"}``; ``on_epoch_end(row,
    seconds)`` may add to it (validation), save checkpoints and announce it; returning
    True stops after that epoch. ``loader_for(epoch)`` gives the epoch's (seeded) loader;
    the learning-rate schedule steps once per epoch. ``start_step`` is the number of
    optimizer steps already done (when resuming), so ``on_step`` sees a global count.
    """
    rows: list[dict[str, Any]] = []
    step = start_step
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()

        def after_step(loss: torch.Tensor, epoch: int = epoch) -> None:
            nonlocal step
            step += 1
            if on_step is not None:
                on_step(TrainingStep(step, epoch, model, optimizer, loss))

        row: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        row.update(
            train_epoch(
                model,
                loader_for(epoch),
                optimizer,
                device,
                f"{label} {epoch + 1}/{epochs}",
                quiet,
                on_step=after_step,
            )
        )
        scheduler.step()
        rows.append(row)
        if on_epoch_end is not None and on_epoch_end(row, time.perf_counter() - started):
            break
    return rows


def seeded_loader(
    dataset, batch_size: int, workers: int, seed: int, shuffle: bool, **options: Any
) -> DataLoader:
    """A loader whose order depends only on ``seed`` (set per epoch for resumability).

    ``options`` are further DataLoader arguments (``pin_memory``, ``persistent_workers``,
    ``prefetch_factor``: see :func:`shrinkbench_core.experiment.loading.loader_settings`).
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        drop_last=False,
        **options,
    )

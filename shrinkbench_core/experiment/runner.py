"""The standardized pipeline: dense -> prune -> fine-tune -> evaluate, resumable.

Every strategy is compared from the same dense weights (see
:mod:`shrinkbench_core.experiment.dense`), with the same fine-tuning and the
same metrics. Randomness is split into seeds for model initialization, data
order, augmentation and pruning; each epoch reseeds from them, so an
interrupted run resumes to the same result as an uninterrupted one.
"""

from __future__ import annotations

import copy
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinkbench_core import __version__
from shrinkbench_core.checkpoints import load_state_dict_file
from shrinkbench_core.data import DataSplits
from shrinkbench_core.errors import CheckpointError
from shrinkbench_core.experiment.atomic import atomic_torch_save, atomic_write_json, read_json
from shrinkbench_core.experiment.dense import cached_dense_weights
from shrinkbench_core.experiment.evaluation import evaluate_stage
from shrinkbench_core.experiment.resolve import ResolvedExperiment
from shrinkbench_core.experiment.rundir import COMPLETE, FAILED, INTERRUPTED, RUNNING, RunDirectory
from shrinkbench_core.experiment.training import (
    make_optimizer,
    make_scheduler,
    seeded_loader,
    train_epoch,
)
from shrinkbench_core.metrics import MetricContext
from shrinkbench_core.pruning import (
    compression_budget,
    find_classifier,
    hold_masks,
    load_masks,
    masks_summary,
    prunable_parameters,
    save_masks,
)


@dataclass
class RunResult:
    """Where a run's results are and what they say."""

    path: Path
    metrics: dict[str, Any]
    already_complete: bool = False
    resumed_from_epoch: int | None = None
    timings: dict[str, float] = field(default_factory=dict)


def run_name(resolved: ResolvedExperiment) -> str:
    """Directory name of a run: readable fields plus the config digest."""
    config = resolved.config
    strategy = config.strategy.name.replace(":", "-")
    return (
        f"{config.dataset.name}-{config.model.name}-{strategy}-"
        f"c{config.compression:g}-s{config.seed}-{config.digest()[:10]}"
    )


def pick_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def git_commit() -> str | None:
    """The commit of the source tree the core runs from, when it is a git checkout."""
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def versions(resolved: ResolvedExperiment) -> dict[str, Any]:
    """Versions of python, torch, the core and every plugin used, and the git commit."""
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "shrinkbench-core": __version__,
        "plugins": resolved.plugin_versions(),
        "git_commit": git_commit(),
    }


class Experiment:
    """One experiment, run in its own run directory."""

    def __init__(self, resolved: ResolvedExperiment, quiet: bool = False) -> None:
        self.resolved = resolved
        self.config = resolved.config
        self.seeds = self.config.seeds.resolve(self.config.seed)
        self.quiet = quiet
        self.root = Path(self.config.output)
        self.run_dir = RunDirectory(self.root / "runs" / run_name(resolved))
        self.device = pick_device(self.config.device)
        self.dense_model: nn.Module | None = None  # kept to time dense vs pruned side by side

    # -- entry point ------------------------------------------------------------
    def run(self, force: bool = False) -> RunResult:
        """Run (or resume) the experiment; a completed run is only reported."""
        run_dir = self.run_dir
        if run_dir.is_complete and not force:
            return RunResult(run_dir.path, read_json(run_dir.metrics), already_complete=True)
        if force:
            run_dir.clear()
        run_dir.prepare()
        atomic_write_json(
            run_dir.config,
            {
                "digest": self.config.digest(),
                "config": self.config.model_dump(mode="json"),
                "seeds": self.seeds.model_dump(),
                "versions": versions(self.resolved),
            },
        )
        run_dir.set_status(RUNNING)
        try:
            result = self._run()
        except KeyboardInterrupt:
            run_dir.set_status(INTERRUPTED, message="interrupted; rerun the same command to resume")
            raise
        except BaseException as error:
            run_dir.set_status(FAILED, error=f"{type(error).__name__}: {error}")
            raise
        run_dir.set_status(COMPLETE)
        return result

    # -- building blocks ----------------------------------------------------------
    def build_data(self) -> DataSplits:
        """Build the dataset's splits from the registry."""
        spec, config = self.resolved.dataset, self.config.dataset
        params = spec.parameters(**config.params)
        return spec.load()(params, seed=self.seeds.data_order)

    def build_model(self, splits: DataSplits) -> nn.Module:
        """Build the model with the init seed; pretrained weights when asked for."""
        spec, config = self.resolved.model, self.config.model
        params = dict(config.params)
        if self.config.dense.source == "pretrained":
            params["weights"] = self.config.dense.weights
        torch.manual_seed(self.seeds.init)
        model = spec.load()(
            spec.parameters(**params),
            num_classes=splits.num_classes or self.resolved.dataset.num_classes,
            input_shape=tuple(splits.input_shape or self.resolved.dataset.input_shape),
        )
        return model.to(self.device)

    def loaders(self, splits: DataSplits) -> dict[str, Any]:
        """Evaluation loaders (no shuffling) for validation and test."""
        batch, workers = self.config.dataset.eval_batch_size, self.config.dataset.workers
        loaders = {"test": seeded_loader(splits.test, batch, workers, 0, shuffle=False)}
        if splits.validation is not None and len(splits.validation):
            loaders["validation"] = seeded_loader(
                splits.validation, batch, workers, 0, shuffle=False
            )
        return loaders

    def train_loader(self, splits: DataSplits, epoch: int, stage: str) -> Any:
        """The training loader of one epoch, ordered and augmented by that epoch's seeds."""
        offset = 0 if stage == "dense" else 100_000
        torch.manual_seed(self.seeds.augmentation + offset + epoch)
        return seeded_loader(
            splits.train,
            self.config.dataset.batch_size,
            self.config.dataset.workers,
            self.seeds.data_order + offset + epoch,
            shuffle=True,
        )

    def calibration_batches(self, splits: DataSplits) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Seeded calibration batches from the un-augmented training data."""
        count = self.config.calibration_batches if self.resolved.strategy.needs_data else 0
        if count == 0:
            return []
        loader = seeded_loader(
            splits.train_eval, self.config.dataset.batch_size, 0, self.seeds.pruning, shuffle=True
        )
        batches = []
        for inputs, targets in loader:
            batches.append((inputs.to(self.device), targets.to(self.device)))
            if len(batches) == count:
                break
        return batches

    def context(
        self, model: nn.Module, splits: DataSplits, masks: dict, prunable: list[str], stage: str
    ) -> MetricContext:
        """What metrics are computed on at one stage."""
        example = splits.test[0][0].unsqueeze(0).to(self.device)
        return MetricContext(
            model=model,
            dense_model=self.dense_model if stage != "dense" else None,
            example_input=example,
            device=self.device,
            masks=masks,
            prunable=prunable,
            loaders=self.loaders(splits),
            stage=stage,
            batch_size=self.config.dataset.eval_batch_size,
        )

    def obtain_dense(self, model: nn.Module, splits: DataSplits) -> dict[str, Any]:
        """Load or train the dense weights; returns where they came from."""
        dense = self.config.dense
        if dense.source == "checkpoint":
            load_state_dict_file(model, dense.checkpoint or "")
            return {"source": "checkpoint", "checkpoint": dense.checkpoint}
        if dense.source == "pretrained":
            return {"source": "pretrained", "weights": dense.weights}
        digest = self.config.dense_digest()

        def train() -> dict[str, Any]:
            return {"source": "train", "logs": self.train_dense(model, splits)}

        cache = self.root / "dense" / digest[:16]
        info, trained_now = cached_dense_weights(
            cache, model, train, {"digest": digest, "config": self.config.model_dump(mode="json")}
        )
        return {
            "source": "train",
            "cache": str(cache),
            "digest": digest,
            "trained_now": trained_now,
        }

    def train_dense(self, model: nn.Module, splits: DataSplits) -> list[dict[str, Any]]:
        """Train the dense model for ``dense.epochs`` epochs."""
        config = self.config.dense
        optimizer = make_optimizer(model, config.optimizer)
        scheduler = make_scheduler(optimizer, config)
        logs = []
        for epoch in range(config.epochs):
            loader = self.train_loader(splits, epoch, "dense")
            stats = train_epoch(
                model,
                loader,
                optimizer,
                self.device,
                f"dense {epoch + 1}/{config.epochs}",
                self.quiet,
            )
            scheduler.step()
            logs.append({"epoch": epoch + 1, **stats})
        return logs

    # -- the pipeline -------------------------------------------------------------
    def _run(self) -> RunResult:
        run_dir, config = self.run_dir, self.config
        timings: dict[str, float] = {}
        started = time.perf_counter()
        splits = self.build_data()
        model = self.build_model(splits)
        example = splits.test[0][0].unsqueeze(0).to(self.device)
        classifier = self.resolved.model.classifier or find_classifier(model, example)
        prunable = prunable_parameters(model, config.prunable, classifier)
        compression_budget(model, prunable, config.compression)  # fail fast if unreachable
        progress = read_json(run_dir.progress) if run_dir.last_checkpoint.is_file() else None
        resumed_from = None
        if progress and run_dir.masks.is_file():
            masks = load_masks(run_dir.masks, model)
            stages = progress["stages"]
            start_epoch = self._restore(model, run_dir.last_checkpoint)
            resumed_from = start_epoch
            self.dense_model = self.build_model(splits)
            self.obtain_dense(self.dense_model, splits)
        else:
            stages = {}
            stages["dense_source"] = self.obtain_dense(model, splits)
            self.dense_model = copy.deepcopy(model)
            timings["dense"] = time.perf_counter() - started
            stages["dense"] = self.evaluate(model, splits, {}, prunable, "dense")
            masks = self.prune(model, splits, prunable, classifier)
            save_masks(masks, run_dir.masks)
            masks_summary(masks).to_csv(run_dir.masks_summary, index=False)
            stages["pruned"] = self.evaluate(model, splits, masks, prunable, "pruned")
            start_epoch = 0
        timings["prune"] = time.perf_counter() - started
        logs = self.finetune(model, splits, masks, stages, start_epoch)
        stages["finetuned"] = self.evaluate(model, splits, masks, prunable, "finetuned")
        if run_dir.best_checkpoint.is_file():
            best = torch.load(run_dir.best_checkpoint, map_location="cpu", weights_only=True)
            best_model = copy.deepcopy(model)
            best_model.load_state_dict(best["model"])
            stages["best_validation"] = {
                "epoch": best["epoch"],
                **self.evaluate(
                    best_model, splits, masks, prunable, "best_validation", accuracy_only=True
                ),
            }
        atomic_torch_save(model.state_dict(), run_dir.model)
        timings["total"] = time.perf_counter() - started
        metrics = self.summarize(stages, logs, timings)
        atomic_write_json(run_dir.metrics, metrics)
        return RunResult(run_dir.path, metrics, resumed_from_epoch=resumed_from, timings=timings)

    def evaluate(
        self,
        model: nn.Module,
        splits: DataSplits,
        masks: dict,
        prunable: list[str],
        stage: str,
        accuracy_only: bool = False,
    ) -> dict[str, Any]:
        """Every configured metric at one stage."""
        context = self.context(model, splits, masks, prunable, stage)
        specs = [m for m in self.resolved.metrics if not accuracy_only or m.name == "accuracy"]
        return evaluate_stage(context, specs, quiet=self.quiet)

    def prune(
        self, model: nn.Module, splits: DataSplits, prunable: list[str], classifier: str | None
    ) -> dict[str, torch.Tensor]:
        """Apply the strategy (seeded) to the dense model; return its masks."""
        spec = self.resolved.strategy
        torch.manual_seed(self.seeds.pruning)
        strategy = spec.load()(
            model,
            self.config.compression,
            params=spec.parameters(**self.config.strategy.params),
            calibration=self.calibration_batches(splits),
            prunable=prunable,
            classifier=classifier,
            seed=self.seeds.pruning,
        )
        return strategy.apply()

    def finetune(
        self,
        model: nn.Module,
        splits: DataSplits,
        masks: dict[str, torch.Tensor],
        stages: dict[str, Any],
        start_epoch: int,
    ) -> list[dict[str, Any]]:
        """Fine-tune with masks held; checkpoint every epoch; track the best validation epoch."""
        run_dir, config = self.run_dir, self.config.finetune
        optimizer = make_optimizer(model, config.optimizer)
        scheduler = make_scheduler(optimizer, config)
        logs: list[dict[str, Any]] = []
        best_score = float("-inf")
        if start_epoch:
            state = torch.load(run_dir.last_checkpoint, map_location="cpu", weights_only=True)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            logs = read_json(run_dir.progress).get("logs", [])
            best_score = state.get("best_score", best_score)
        holder = hold_masks(model, masks, optimizer)
        loaders = self.loaders(splits)
        try:
            for epoch in range(start_epoch, config.epochs):
                loader = self.train_loader(splits, epoch, "finetune")
                row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
                row.update(
                    train_epoch(
                        model,
                        loader,
                        optimizer,
                        self.device,
                        f"fine-tune {epoch + 1}/{config.epochs}",
                        self.quiet,
                    )
                )
                scheduler.step()
                if "validation" in loaders:
                    from shrinkbench_core.experiment.evaluation import accuracy_of

                    val = accuracy_of(model, loaders["validation"], self.device)
                    row.update({f"validation_{k}": v for k, v in val.items()})
                    if val["top1"] > best_score:
                        best_score = val["top1"]
                        atomic_torch_save(
                            {"model": model.state_dict(), "epoch": epoch + 1},
                            run_dir.best_checkpoint,
                        )
                logs.append(row)
                atomic_torch_save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "epoch": epoch + 1,
                        "best_score": best_score,
                    },
                    run_dir.last_checkpoint,
                )
                atomic_write_json(
                    run_dir.progress, {"stages": stages, "logs": logs, "epoch": epoch + 1}
                )
                run_dir.write_logs(logs)
        finally:
            holder.remove()
        if config.epochs == 0 or not run_dir.last_checkpoint.is_file():
            atomic_write_json(run_dir.progress, {"stages": stages, "logs": logs, "epoch": 0})
        return logs

    def _restore(self, model: nn.Module, path: Path) -> int:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            return int(state["epoch"])
        except Exception as error:
            raise CheckpointError(
                f"cannot resume from {path}: {type(error).__name__}: {error}. "
                "Rerun with --force to start the run again."
            ) from None

    def summarize(
        self, stages: dict[str, Any], logs: list[dict[str, Any]], timings: dict[str, float]
    ) -> dict[str, Any]:
        """The content of ``metrics.json``."""
        final = stages.get("finetuned", {})
        size = final.get("size", {})
        flops = final.get("flops", {})
        return {
            "digest": self.config.digest(),
            "compression": {
                "requested": self.config.compression,
                "achieved": size.get("compression_ratio"),
            },
            "theoretical_speedup": flops.get("theoretical_speedup"),
            **stages,
            "epochs": len(logs),
            "timings_seconds": timings,
        }

"""Input pipeline vs training throughput: is a run bound by its data or by its compute?

Generates a small ImageNet-style JPEG folder (images the size of typical ImageNet
photos, 500x375) and CIFAR-10 pickles in a temporary folder (the writers of
``tests/datagen.py``), then measures, in one process:

* images per second of each plugin's real training pipeline (ImageNet: decode,
  RandomResizedCrop(224), flip, normalize; CIFAR: random crop with padding, flip,
  normalize) through a DataLoader at 0, 1 and 2 workers, over one whole epoch after a
  warm-up epoch that starts the (persistent) workers;
* images per second of one training step of the model that eats that data
  (resnet18 at 224x224, CIFAR resnet20 at 32x32: forward, backward, SGD step).

The ratio loader / training says which one bounds a run on this machine: below 1 the
model waits for data. The DataLoader defaults of ``shrinkbench_core.experiment.loading``
are printed beside the figures.

    python benchmarks/bench_data.py [--images 192] [--cifar-images 2560] [--steps 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from datagen import write_cifar10, write_imagenet  # noqa: E402

from shrinkbench_core.experiment.loading import loader_settings  # noqa: E402


def loader_throughput(dataset, batch_size: int, workers: int) -> float:
    """Images per second over one whole epoch, after a first epoch that starts the workers.

    Workers persist (the default settings), so the timed epoch includes refilling the
    prefetch queue but not starting processes; timing whole epochs, not a few batches
    after the first, keeps batches prefetched during start-up out of the figure.
    """
    settings = loader_settings("cpu", workers=workers).kwargs()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, **settings)
    for _ in loader:  # warm-up epoch
        pass
    started, seen = time.perf_counter(), 0
    for inputs, _targets in loader:
        seen += len(inputs)
    seconds = time.perf_counter() - started
    del loader
    return seen / seconds


def training_throughput(model: nn.Module, shape: tuple[int, ...], batch: int, steps: int) -> float:
    """Images per second of forward + backward + SGD step on random inputs (after one warm-up)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    inputs = torch.randn(batch, *shape)
    targets = torch.randint(0, 10, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192, help="ImageNet training images")
    parser.add_argument("--cifar-images", type=int, default=2560, help="CIFAR training images")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps")
    args = parser.parse_args()

    import torchvision
    from shrinkbench_cifar.data import build_cifar10
    from shrinkbench_cifar.models import resnet20
    from shrinkbench_cifar.parameters import CifarDataParameters
    from shrinkbench_imagenet.imagenet import build
    from shrinkbench_imagenet.parameters import ImageNetParameters

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, defaults on this machine: "
          f"cpu {loader_settings('cpu').kwargs()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        classes = 8
        write_imagenet(root / "imagenet", num_classes=classes,
                       train_per_class=max(1, args.images // classes), val_per_class=1,
                       size=(375, 500), layout="folder")
        write_cifar10(root, n_train=args.cifar_images, n_test=10)
        imagenet = build(ImageNetParameters(root=str(root / "imagenet"), layout="folder"),
                         seed=0).train
        cifar = build_cifar10(CifarDataParameters(root=str(root), validation_size=0), seed=0).train
        pipelines = [
            ("imagenet folder, 224 crop", imagenet, 32,
             lambda: torchvision.models.resnet18(num_classes=10), (3, 224, 224), 16),
            ("cifar10 pickles, 32 crop", cifar, 128, resnet20, (3, 32, 32), 128),
        ]
        for label, dataset, batch, model_fn, shape, train_batch in pipelines:
            torch.manual_seed(0)
            train = training_throughput(model_fn(), shape, train_batch, args.steps)
            for workers in (0, 1, 2):
                data = loader_throughput(dataset, batch, workers)
                rows.append((label, workers, data, train, data / train))
    print(f"{'pipeline':<28}{'workers':>8}{'loader img/s':>14}{'train img/s':>13}"
          f"{'loader/train':>14}  bound by")
    for label, workers, data, train, ratio in rows:
        bound = "data" if ratio < 1 else "compute"
        print(f"{label:<28}{workers:>8}{data:>14.0f}{train:>13.1f}{ratio:>13.2f}x  {bound}")


if __name__ == "__main__":
    main()

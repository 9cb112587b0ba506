"""The catalogue of torchvision's classification models, generated from torchvision itself.

Every entry comes from torchvision's own registry: the names from
``torchvision.models.list_models(module=torchvision.models)`` (classification
models only: no detection, segmentation, video or quantized ones), the weights
and their published facts (ImageNet-1K acc@1/acc@5, parameter count, GFLOPs,
file size, preprocessing sizes) from ``get_model_weights(name)``. Nothing is
kept by hand except :data:`BUILDER_DEFAULTS`. The classifier layer of each
model is found by running it once (see :func:`describe_model`).

Why a cache: importing torchvision imports torch (1-2 s), and listing
components must not import torch. The catalogue is therefore generated once
per torchvision version and stored as JSON in
``<cache>/torchvision-<version>-catalogue-v<FORMAT>.json``, where ``<cache>`` is
``$SHRINKBENCH_CACHE``, else ``$XDG_CACHE_HOME/shrinkbench``, else
``~/.cache/shrinkbench``. The version is read with ``importlib.metadata``
without importing torchvision. When torchvision is not yet imported in this
process, the catalogue is generated in a subprocess
(``python -m shrinkbench_imagenet.catalogue``), so the calling process stays
torch-free; otherwise it is generated in-process. Generation takes about half a
minute on a laptop CPU, once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from functools import lru_cache
from importlib.metadata import version as distribution_version
from pathlib import Path
from typing import Any

from shrinkbench_core.errors import PluginError

CATALOGUE_FORMAT = 1

BUILDER_DEFAULTS: dict[str, dict[str, Any]] = {
    # Without these, the models return (logits, auxiliary logits) tuples in training mode.
    "googlenet": {"aux_logits": False},
    "inception_v3": {"aux_logits": False},
}
"""Builder keyword arguments applied to every build of these models (overridable)."""

PROBE_SIZES = (32, 64, 224, 256, 299, 384, 518)
"""Square input sizes tried, from the smallest a model's weights allow, to find its classifier."""

_PROBE_CLASSES = 1000


def cache_dir() -> Path:
    """Where ShrinkBench caches generated files."""
    if os.environ.get("SHRINKBENCH_CACHE"):
        return Path(os.environ["SHRINKBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "shrinkbench"


def torchvision_version() -> str:
    """The installed torchvision version, read without importing it."""
    return distribution_version("torchvision")


def catalogue_path() -> Path:
    """The JSON file caching the catalogue of the installed torchvision."""
    name = f"torchvision-{torchvision_version()}-catalogue-v{CATALOGUE_FORMAT}.json"
    return cache_dir() / name


def load_catalogue() -> dict[str, dict[str, Any]]:
    """Model name -> entry (see :func:`describe_model`), generated and cached on first use."""
    return _load(str(catalogue_path()))


@lru_cache(maxsize=4)
def _load(path_text: str) -> dict[str, dict[str, Any]]:
    path = Path(path_text)
    data = _read(path)
    if data is None:
        data = (
            _generate_here(path) if "torchvision" in sys.modules else _generate_in_subprocess(path)
        )
    return data["models"]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    valid = (
        isinstance(data, dict)
        and data.get("format") == CATALOGUE_FORMAT
        and data.get("torchvision") == torchvision_version()
        and isinstance(data.get("models"), dict)
    )
    return data if valid else None


def _write(path: Path, data: dict[str, Any]) -> None:
    """Write atomically; a read-only cache only costs regenerating next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
            json.dump(data, tmp, indent=1, sort_keys=True)
        os.replace(tmp.name, path)
    except OSError:
        pass


def _generate_here(path: Path) -> dict[str, Any]:
    data = generate_catalogue()
    _write(path, data)
    return data


def _generate_in_subprocess(path: Path) -> dict[str, Any]:
    print(
        f"shrinkbench-imagenet: cataloguing torchvision {torchvision_version()}'s models "
        f"(once per version) into {path}",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "catalogue.json"
        command = [sys.executable, "-m", "shrinkbench_imagenet.catalogue", "--output", str(output)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        data = _read(output)
    if result.returncode != 0 or data is None:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise PluginError(
            "could not catalogue torchvision's models: " + (" | ".join(tail) or "no output")
        )
    _write(path, data)
    return data


def generate_catalogue() -> dict[str, Any]:
    """Describe every torchvision classification model (imports torchvision)."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    return {
        "format": CATALOGUE_FORMAT,
        "torchvision": torchvision_version(),
        "models": {name: describe_model(name) for name in names},
    }


def describe_weights(weights: Any) -> dict[str, Any]:
    """The published facts of one torchvision weights enum member."""
    meta = weights.meta
    metrics = next(iter(meta.get("_metrics", {}).items()), (None, {}))
    preprocessing = weights.transforms()
    return {
        "url": weights.url,
        "dataset": metrics[0],
        "acc@1": metrics[1].get("acc@1"),
        "acc@5": metrics[1].get("acc@5"),
        "num_params": meta.get("num_params"),
        "gflops": meta.get("_ops"),
        "file_size_mb": meta.get("_file_size"),
        "min_size": list(meta.get("min_size", ())),
        "num_categories": len(meta.get("categories") or ()),
        "crop_size": _first(getattr(preprocessing, "crop_size", None)),
        "resize_size": _first(getattr(preprocessing, "resize_size", None)),
        "interpolation": getattr(getattr(preprocessing, "interpolation", None), "value", None),
        "recipe": meta.get("recipe"),
    }


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) and value else value


def describe_model(name: str) -> dict[str, Any]:
    """One catalogue entry: builder, weights with their metadata, classifier layer.

    The classifier is found by building the model (initialisation skipped, see
    :func:`shrinkbench_imagenet.classifier.skipped_initialisation`), moving it to
    the ``meta`` device (shapes without data) and running it in eval mode on the
    smallest square input it accepts, starting from the smallest ``min_size``
    of its weights.
    """
    import torch
    import torchvision

    from .classifier import find_classifier, skipped_initialisation

    enum = torchvision.models.get_model_weights(name)
    weights = {member.name: describe_weights(member) for member in enum}
    smallest = min((max(w["min_size"] or [1]) for w in weights.values()), default=1)
    builder = torchvision.models.get_model_builder(name)
    kwargs = BUILDER_DEFAULTS.get(name, {})
    with skipped_initialisation():
        model = builder(**kwargs).eval().to("meta")  # shapes only: no memory, no arithmetic
    classifier, probe_size, errors = None, None, []
    for size in [s for s in PROBE_SIZES if s >= smallest] or [max(PROBE_SIZES)]:
        try:
            example = torch.empty(1, 3, size, size, device="meta")
            classifier = find_classifier(model, example, _PROBE_CLASSES)
        except Exception as error:  # too small for this architecture: try the next size
            errors.append(f"{size}: {type(error).__name__}")
            continue
        probe_size = size
        break
    layer = model.get_submodule(classifier) if classifier else None
    return {
        "name": name,
        "builder": f"{builder.__module__}.{builder.__name__}",
        "weights_enum": enum.__name__,
        "default_weights": enum.DEFAULT.name,
        "weights": weights,
        "builder_defaults": kwargs,
        "classifier": classifier,
        "classifier_type": type(layer).__name__ if layer is not None else None,
        "probe_size": probe_size,
        "probe_errors": errors if classifier is None else [],
    }


def main(argv: list[str] | None = None) -> int:
    """Write the catalogue of the installed torchvision as JSON."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--output", type=Path, help="file to write (default: the cache file)")
    args = parser.parse_args(argv)
    data = generate_catalogue()
    output = args.output or catalogue_path()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(data, indent=1, sort_keys=True))
    missing = [name for name, entry in data["models"].items() if entry["classifier"] is None]
    print(f"{len(data['models'])} models catalogued into {output}", file=sys.stderr)
    if missing:
        print(f"no classifier found for: {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

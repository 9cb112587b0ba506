"""Mapping our dataset and model names to the survey's, and back.

Our components are named like registry entries (``cifar10``, ``resnet56``);
the survey writes ``"CIFAR-10"`` and ``"ResNet-56"``. A name of ours is mapped,
first rule that applies:

1. a user mapping (see :func:`user_mapping`: ``$SHRINKBENCH_SURVEY_NAMES`` or
   an explicit ``NameMapping``), which may also map a whole pair, e.g.
   ``{"pairs": {"digits:mlp": "MNIST:LeNet-300-100"}}``;
2. the name is already a survey name (``"ResNet-56"``);
3. the built-in aliases below (``lenet300`` -> ``"LeNet-300-100"``,
   ``vgg_bn_drop`` -> ``"VGG-Torch-CIFAR10"``, ...);
4. equal after lower-casing and dropping everything but letters and digits
   (``resnet56`` = ``ResNet-56``, ``cifar10`` = ``CIFAR-10``,
   ``mobilenet_v2`` = ``MobileNet-v2``, ``vgg16`` = ``VGG-16``).

A registry name qualified by its plugin (``shrinkbench_cifar:resnet56``) is
mapped by its bare name. Caveat: the survey's names are the papers'; e.g. its
CIFAR-10 ``"VGG-16"`` results come from several different VGG variants (see
their ``notes``), so a name match says the architectures are *meant* to be the
same, not that they are identical.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shrinkbench_core.errors import UserError

#: Environment variable holding a JSON mapping (inline, or the path of a JSON file).
MAPPING_ENV = "SHRINKBENCH_SURVEY_NAMES"

#: Our dataset names whose survey name is not found by normalization alone.
DATASET_ALIASES: dict[str, str] = {
    "tinyimagenet": "Tiny ImageNet",
    "cub200": "CUB200-2011",
    "stanforddogs": "Stanford-Dogs",
}

#: Our model names whose survey name is not found by normalization alone.
MODEL_ALIASES: dict[str, str] = {
    "lenet300": "LeNet-300-100",
    "lenet300100": "LeNet-300-100",
    "vggbndrop": "VGG-Torch-CIFAR10",  # the original ShrinkBench's CIFAR VGG (cifar.torch)
    "vggbndrop100": "VGG-Torch-CIFAR10",
    "squeezenet10": "SqueezeNet",  # torchvision squeezenet1_0, the original SqueezeNet
    "mobilenetv1": "MobileNet",
    "preresnet110": "PreResNet-110",
    "preresnet164": "PreResNet-164",
}


def normalize(name: str) -> str:
    """Lower-case letters and digits only: ``"ResNet-56"`` -> ``"resnet56"``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def bare(name: str) -> str:
    """A registry name without its plugin qualifier (``plugin:name`` -> ``name``)."""
    return name.rsplit(":", 1)[-1] if ":" in name else name


def parse_pair(text: str) -> tuple[str, str]:
    """``"CIFAR-10:ResNet-56"`` -> ``("CIFAR-10", "ResNet-56")`` (dataset first)."""
    dataset, sep, model = text.partition(":")
    if not sep or not dataset.strip() or not model.strip():
        raise UserError(
            f"invalid survey pair {text!r}: write DATASET:MODEL, e.g. 'CIFAR-10:ResNet-56'"
        )
    return dataset.strip(), model.strip()


@dataclass(frozen=True)
class NameMapping:
    """User-given names: ``datasets``/``models`` map one name, ``pairs`` a ``dataset:model``."""

    datasets: Mapping[str, str] = field(default_factory=dict)
    models: Mapping[str, str] = field(default_factory=dict)
    pairs: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: object, origin: str = "mapping") -> NameMapping:
        """Validate a ``{"datasets": {...}, "models": {...}, "pairs": {...}}`` dict."""
        if not isinstance(data, dict):
            raise UserError(f"{origin}: expected a JSON object with datasets, models, pairs")
        unknown = set(data) - {"datasets", "models", "pairs"}
        if unknown:
            raise UserError(
                f"{origin}: unknown keys {sorted(unknown)}; allowed: datasets, models, pairs"
            )
        parts: dict[str, dict[str, str]] = {}
        for key in ("datasets", "models", "pairs"):
            part = data.get(key, {})
            if not isinstance(part, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in part.items()
            ):
                raise UserError(f"{origin}: {key!r} must map names (strings) to names (strings)")
            parts[key] = dict(part)
        for ours, theirs in parts["pairs"].items():
            parse_pair(ours)
            parse_pair(theirs)
        return cls(**parts)


def user_mapping(value: str | None = None) -> NameMapping:
    """The mapping in ``$SHRINKBENCH_SURVEY_NAMES`` (or ``value``): inline JSON or a file path."""
    text = os.environ.get(MAPPING_ENV, "") if value is None else value
    if not text.strip():
        return NameMapping()
    origin = MAPPING_ENV
    if not text.lstrip().startswith("{"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise UserError(f"{MAPPING_ENV}: {text!r} is neither inline JSON nor a file")
        origin, text = str(path), path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{origin}: not valid JSON ({error})") from error
    return NameMapping.from_dict(data, origin)


def _lookup(table: Mapping[str, str], name: str) -> str | None:
    if name in table:
        return table[name]
    wanted = normalize(name)
    for key, value in table.items():
        if normalize(key) == wanted:
            return value
    return None


def survey_name(
    name: str, known: Iterable[str], aliases: Mapping[str, str], user: Mapping[str, str]
) -> str | None:
    """The survey's name for one of our names (``None`` when nothing matches ``known``)."""
    known = set(known)
    for candidate in dict.fromkeys((name, bare(name))):
        mapped = _lookup(user, candidate)
        if mapped is not None:
            return mapped
        if candidate in known:
            return candidate
        alias = _lookup(aliases, candidate)
        if alias is not None and alias in known:
            return alias
        by_form = {normalize(k): k for k in known}
        if normalize(candidate) in by_form:
            return by_form[normalize(candidate)]
    return None


def survey_dataset_name(
    name: str, known: Iterable[str], mapping: NameMapping | None = None
) -> str | None:
    """The survey's dataset name for ``name`` (ours or theirs), or ``None``."""
    user = (mapping or NameMapping()).datasets
    return survey_name(name, known, DATASET_ALIASES, user)


def survey_model_name(
    name: str, known: Iterable[str], mapping: NameMapping | None = None
) -> str | None:
    """The survey's model name for ``name`` (ours or theirs), or ``None``."""
    user = (mapping or NameMapping()).models
    return survey_name(name, known, MODEL_ALIASES, user)


def survey_pair_for(
    dataset: str,
    model: str,
    mapping: NameMapping | None = None,
    source: str = "survey",
) -> tuple[str, str] | None:
    """The survey (dataset, model) pair for one of ours, or ``None`` if the survey has no results.

    ``mapping`` defaults to :func:`user_mapping` (``$SHRINKBENCH_SURVEY_NAMES``).
    A pair mapped explicitly by the user must exist in the survey, else
    :class:`~shrinkbench_core.errors.UserError`.
    """
    from shrinkbench_core.survey.load import load_results

    mapping = user_mapping() if mapping is None else mapping
    results = load_results(source)
    pairs = set(zip(results["dataset"], results["model"], strict=True))
    explicit = _lookup(mapping.pairs, f"{dataset}:{model}") or _lookup(
        mapping.pairs, f"{bare(dataset)}:{bare(model)}"
    )
    if explicit is not None:
        wanted_dataset, wanted_model = parse_pair(explicit)
        wanted = (
            survey_dataset_name(wanted_dataset, results["dataset"]) or wanted_dataset,
            survey_model_name(wanted_model, results["model"]) or wanted_model,
        )
        return check_pair(wanted, pairs)
    survey_dataset = survey_dataset_name(dataset, results["dataset"], mapping)
    survey_model = survey_model_name(model, results["model"], mapping)
    if survey_dataset is None or survey_model is None:
        return None
    pair = (survey_dataset, survey_model)
    return pair if pair in pairs else None


def check_pair(pair: tuple[str, str], pairs: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """Return ``pair`` if the survey has results for it, else raise a UserError that says so."""
    pairs = set(pairs)
    if pair in pairs:
        return pair
    same_dataset = sorted(m for d, m in pairs if d == pair[0])
    hint = (
        f"models with {pair[0]} results: {', '.join(same_dataset[:12])}"
        if same_dataset
        else "see `shrinkbench survey pairs`"
    )
    raise UserError(f"the survey has no results for {pair[0]}:{pair[1]}; {hint}")

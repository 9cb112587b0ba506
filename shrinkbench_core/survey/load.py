"""The survey as tidy pandas tables: one row per paper, per reported result, per problem.

Sources (shipped in ``survey/data/``, see ``PROVENANCE.md`` there):

- ``results.csv``: 551 results reported by the 81 surveyed papers (source ``"survey"``);
- ``papers.csv``: the papers (year, venue, first author, BibTeX);
- ``state_of_sparsity_resnet50/``: every ImageNet ResNet-50 run of Gale et al.
  (2019), "The State of Sparsity in Deep Neural Networks" (source
  ``"state-of-sparsity"``; 1008 runs of four methods).

Conversion rules (all values end up as fractions or ratios):

1. Units come from the column, not from the size of the number. Accuracy,
   error, change, kept and saved columns are percentages and must carry a
   ``%`` sign (``"93.55%"`` -> 0.9355); ``MParams``/``OrigMParams`` (millions
   of parameters), ``GFLOPS``/``OrigGFLOPS`` (billions of multiply-adds as the
   paper counts them) and the ``old/new`` ratios are bare numbers. A cell in
   the wrong form is *unparseable*; a value outside its column's range
   (accuracies outside [0%, 100%], changes outside [-100%, 100%], counts and
   ratios <= 0, kept <= 0%, saved >= 100%) is *implausible*. Both are dropped.
2. Original accuracy: ``OrigTop<k>``, else ``1 - OrigErr<k>`` (derived).
   An original accuracy more than 20 percentage points away from the median
   original accuracy that at least three *other* papers report for the same
   (dataset, model) is *implausible* and dropped (e.g. results 281/582/583
   give 10.1% as VGG-16's original ImageNet top-5 "accuracy": an error rate).
3. Pruned accuracy, in precedence order: ``Top<k>``; ``1 - Err<k>``
   (derived); original + ``dTop<k>`` (derived; ``dTop`` is pruned minus
   original, so a drop is negative). Original, when not reported, is pruned -
   ``dTop<k>`` (derived); the change, when not reported, pruned - original
   (derived). If two ways disagree by more than 0.2 percentage points the
   pruned accuracy, the original and the change for that k are all dropped as
   *contradictory* (e.g. result 365: ``Err1`` 23.60% vs 76.01% - 1.06%).
   Top-5 below top-1 in the same row is contradictory too.
4. Compression ratio = original parameters / remaining parameters, in
   precedence order: ``old/new Nparam`` (as reported); ``OrigMParams /
   MParams``; ``1 / keptParams``; ``1 / (1 - savedParams)`` (all derived).
   Theoretical speedup = original FLOPs / remaining FLOPs, the same way from
   ``old/new FLOPS``, ``OrigGFLOPS / GFLOPS``, ``keptFLOPS``, ``savedFLOPS``.
   Ways that differ by more than 2% (relative) make the value
   *contradictory*; none at all makes it *missing* (e.g. ``MParams`` without
   ``OrigMParams``: the original count is never borrowed from another row).
   The survey authors already encoded each paper's own definition (e.g. a
   "60% compression ratio" that means 60% of parameters removed is recorded as
   ``savedParams``; a "34.6%" speed-up as ``old/new FLOPS`` 1.346).
5. State of Sparsity: ``accuracy``/``Accuracy`` are top-1 fractions as the
   files write them; the sparsity column (``Sparsity``, ``Target Sparsity``,
   ``global_sparsity``, ``global sparsity``) is the fraction of weights
   removed, so compression = 1 / (1 - sparsity) (derived); the original
   accuracy is the mean of the three ``rn50_baselines.csv`` runs, written in
   percent (76.69%, derived); speedup is *missing* (only sparsity is given).

``derived`` is True when any of top1, top5, orig_top1, orig_top5, delta_top1,
delta_top5, compression or speedup was computed rather than read
(``derived_fields`` names them, ``*_from`` columns say how). Everything that
was dropped or missing is a row of :func:`load_issues` and is summarized in
the result's ``issues`` column; nothing is filled in by guessing.
"""

from __future__ import annotations

import csv
import functools
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from shrinkbench_core.errors import UserError
from shrinkbench_core.survey import derive
from shrinkbench_core.survey.values import Issue, Kind, is_blank, parse_cell

#: Where the shipped survey files are.
DATA_DIR = Path(__file__).parent / "data"
SOURCES = ("survey", "state-of-sparsity", "all")
#: Original accuracies this far (fraction) from other papers' median for the pair are implausible.
BASELINE_OUTLIER = 0.20
#: Other papers that must report the pair's original accuracy before the outlier rule applies.
BASELINE_MIN_PAPERS = 3
STATE_OF_SPARSITY_PAPER = "google-state-of-sparsity"

RESULT_COLUMNS = [
    "result_id", "source", "paper", "year", "venue", "dataset", "model", "method",
    "num_trials", "top1", "top5", "orig_top1", "orig_top5", "delta_top1", "delta_top5",
    "std_top1", "std_orig_top1", "params_m", "orig_params_m", "gflops", "orig_gflops",
    "compression", "speedup", "compression_from", "speedup_from", "top1_from", "top5_from",
    "derived", "derived_fields", "issues", "notes",
]  # fmt: skip
ISSUE_COLUMNS = ["result_id", "source", "paper", "dataset", "model", "field", "kind", "detail"]
_DERIVABLE = [
    "top1", "top5", "orig_top1", "orig_top5", "delta_top1", "delta_top5", "compression", "speedup",
]  # fmt: skip


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of one export as dicts of strings (handles the BOM and multi-line cells)."""
    if not path.is_file():
        raise UserError(f"survey file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def _data_dir(data_dir: str | Path | None) -> Path:
    return DATA_DIR if data_dir is None else Path(data_dir)


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise UserError(f"unknown survey source {source!r}; choose one of {', '.join(SOURCES)}")
    return source


# --------------------------------------------------------------------------- papers


def bibtex_title(bibtex: str) -> str:
    """The ``title`` field of a BibTeX entry, without LaTeX braces ('' when absent)."""
    match = re.search(r"\btitle\s*=\s*([{\"])", bibtex, flags=re.IGNORECASE)
    if not match:
        return ""
    start, closer = match.end(), "}" if match.group(1) == "{" else '"'
    depth, index = 1, start
    while index < len(bibtex) and depth:
        char = bibtex[index]
        if closer == "}" and char == "{":
            depth += 1
        elif char == closer:
            depth -= 1
        index += 1
    title = bibtex[start : index - 1].replace("{", "").replace("}", "")
    return " ".join(title.split())


def _year_month(date: str) -> tuple[int | None, int | None]:
    match = re.fullmatch(r"\s*(\d{4})(?:-(\d{1,2}))?\s*", date or "")
    if not match:
        return None, None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def _papers(data_dir: Path) -> pd.DataFrame:
    records = []
    for row in read_csv_rows(data_dir / "papers.csv"):
        year, month = _year_month(row.get("Date", ""))
        records.append(
            {
                "paper": row["Name"].strip(),
                "title": bibtex_title(row.get("BibTeX", "")),
                "first_author": row.get("AuthorName", "").strip(),
                "year": year,
                "month": month,
                "venue": row.get("Venue", "").strip(),
                "compares_to": ", ".join(
                    p.strip() for p in row.get("Compares To", "").split(",") if p.strip()
                ),
                "non_pruning": row.get("Non-pruning", "").strip().lower() == "checked",
                "notes": row.get("Notes", "").strip(),
                "bibtex": row.get("BibTeX", "").strip(),
            }
        )
    papers = pd.DataFrame.from_records(records)
    for column in ("year", "month"):
        papers[column] = papers[column].astype("Int64")
    return papers


# --------------------------------------------------------------------------- results


@dataclass
class _Row:
    """One result on its way to the tidy table."""

    record: dict[str, Any]
    values: dict[str, float | None]
    issues: list[Issue]
    orig: dict[int, derive.Resolved]


def _parse_values(raw: dict[str, str]) -> tuple[dict[str, float | None], list[Issue]]:
    values: dict[str, float | None] = {}
    issues: list[Issue] = []
    for name, column in derive.COLUMNS.items():
        text = raw.get(name)
        values[name] = None
        if is_blank(text):
            continue
        try:
            value = parse_cell(text, column)
        except ValueError as error:
            issues.append(Issue(name, Kind.UNPARSEABLE, str(error)))
            continue
        if not column.allows(value):
            detail = f"{str(text).strip()} is outside {column.describe_range()}"
            issues.append(Issue(name, Kind.IMPLAUSIBLE, detail))
            continue
        values[name] = value
    return values, issues


def _survey_rows(data_dir: Path, papers: pd.DataFrame) -> list[_Row]:
    info = papers.set_index("paper")[["year", "venue"]].to_dict("index")
    rows = []
    for raw in read_csv_rows(data_dir / "results.csv"):
        values, issues = _parse_values(raw)
        paper = raw["Paper"].strip()
        trials = values.get("NumTrials")
        record = {
            "result_id": raw["Name"].strip(),
            "source": "survey",
            "paper": paper,
            "year": info.get(paper, {}).get("year"),
            "venue": info.get(paper, {}).get("venue"),
            "dataset": raw["Dataset"].strip(),
            "model": raw["Model"].strip(),
            "method": raw.get("Method", "").strip() or None,
            "num_trials": None if trials is None else int(trials),
            "std_top1": values.get("stdTop1"),
            "std_orig_top1": values.get("stdOrigTop1"),
            "params_m": values.get("MParams"),
            "orig_params_m": values.get("OrigMParams"),
            "gflops": values.get("GFLOPS"),
            "orig_gflops": values.get("OrigGFLOPS"),
            "notes": " ".join(raw.get("Notes", "").split()) or None,
        }
        orig = {k: derive.original_accuracy(values, k) for k in (1, 5)}
        rows.append(_Row(record, values, issues, orig))
    return rows


def _flag_outlier_baselines(rows: list[_Row]) -> None:
    """Drop original accuracies far from what other papers report for the same pair."""
    for k in (1, 5):
        by_pair: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for row in rows:
            if row.orig[k].value is not None:
                pair = (row.record["dataset"], row.record["model"])
                by_pair[pair][row.record["paper"]].append(row.orig[k].value)
        for row in rows:
            value = row.orig[k].value
            if value is None:
                continue
            per_paper = by_pair[(row.record["dataset"], row.record["model"])]
            others = [
                statistics.median(v) for p, v in per_paper.items() if p != row.record["paper"]
            ]
            if len(others) < BASELINE_MIN_PAPERS:
                continue
            median = statistics.median(others)
            if abs(value - median) > BASELINE_OUTLIER:
                detail = (
                    f"original top-{k} {value:.2%} is more than {BASELINE_OUTLIER:.0%} away from "
                    f"the median {median:.2%} that {len(others)} other papers report for "
                    f"{row.record['dataset']} / {row.record['model']}"
                )
                issue = Issue(f"orig_top{k}", Kind.IMPLAUSIBLE, detail)
                row.orig[k] = derive.Resolved(issues=row.orig[k].issues + [issue])


def _finish(row: _Row) -> dict[str, Any]:
    """Resolve accuracy, compression and speedup of one parsed row into its record."""
    record, issues = row.record, list(row.issues)
    resolved: dict[str, derive.Resolved] = {}
    for k in (1, 5):
        acc = derive.accuracy(row.values, k, row.orig[k])
        resolved[f"top{k}"], resolved[f"orig_top{k}"], resolved[f"delta_top{k}"] = (
            acc.top,
            acc.orig,
            acc.delta,
        )
    for prefix in ("", "orig_"):
        problem = derive.ordered_topk(resolved[f"{prefix}top1"], resolved[f"{prefix}top5"], prefix)
        if problem is not None:
            issues.append(problem)
            for k in (1, 5):
                resolved[f"{prefix}top{k}"] = derive.Resolved()
    resolved["compression"] = derive.reduction_ratio(row.values, derive.PARAMETERS)
    resolved["speedup"] = derive.reduction_ratio(row.values, derive.FLOPS)
    for item in resolved.values():
        issues.extend(item.issues)
    no_accuracy = all(
        resolved[f].value is None for f in ("top1", "top5", "delta_top1", "delta_top5")
    )
    explained = any(i.kind is not Kind.MISSING and "top" in i.field for i in issues)
    if no_accuracy and not explained:
        detail = "no accuracy, error rate or change in accuracy reported"
        issues.append(Issue("accuracy", Kind.MISSING, detail))
    return _record(record, resolved, issues)


def _record(
    record: dict[str, Any], resolved: dict[str, derive.Resolved], issues: list[Issue]
) -> dict[str, Any]:
    for name, item in resolved.items():
        record[name] = item.value
    record["compression_from"] = resolved["compression"].how
    record["speedup_from"] = resolved["speedup"].how
    record["top1_from"] = resolved["top1"].how
    record["top5_from"] = resolved["top5"].how
    derived = [name for name in _DERIVABLE if name in resolved and resolved[name].derived]
    record["derived"] = bool(derived)
    record["derived_fields"] = ";".join(derived) or None
    record["issues"] = "; ".join(f"{i.field} {i.kind.value}" for i in issues) or None
    record["_issues"] = issues
    return record


# --------------------------------------------------------------------------- state of sparsity

#: file, method name, id slug, sparsity column, accuracy column (fractions in these files)
_SOS_FILES = [
    ("rn50_magnitude_pruning.csv", "Magnitude", "magnitude", "Sparsity", "accuracy"),
    ("rn50_random_pruning.csv", "Random", "random", "Target Sparsity", "accuracy"),
    ("rn50_l0_regularization.csv", "L0 regularization", "l0", "global_sparsity", "accuracy"),
    ("rn50_variational_dropout.csv", "Variational dropout", "vd", "global sparsity", "Accuracy"),
]


def _float_or_issue(text: str, name: str, issues: list[Issue]) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        issues.append(Issue(name, Kind.UNPARSEABLE, f"{text!r} is not a number"))
        return None


def _sos_baseline(folder: Path) -> float | None:
    """Mean of the dense baselines, which this file writes in percent."""
    rows = read_csv_rows(folder / "rn50_baselines.csv")
    accuracies = [float(row["Accuracy"]) / 100.0 for row in rows]
    return statistics.fmean(accuracies) if accuracies else None


def _sos_records(data_dir: Path, papers: pd.DataFrame) -> list[dict[str, Any]]:
    folder = data_dir / "state_of_sparsity_resnet50"
    if not folder.is_dir():
        return []
    info = papers.set_index("paper").to_dict("index").get(STATE_OF_SPARSITY_PAPER, {})
    baseline = _sos_baseline(folder)
    records = []
    for filename, method, slug, sparsity_column, accuracy_column in _SOS_FILES:
        for number, raw in enumerate(read_csv_rows(folder / filename), start=1):
            issues: list[Issue] = []
            sparsity = _float_or_issue(raw.get(sparsity_column), sparsity_column, issues)
            top1 = _float_or_issue(raw.get(accuracy_column), accuracy_column, issues)
            if top1 is not None and not 0.0 <= top1 <= 1.0:
                issues.append(Issue("top1", Kind.IMPLAUSIBLE, f"{top1} is outside [0, 1]"))
                top1 = None
            if sparsity is not None and not 0.0 <= sparsity < 1.0:
                detail = f"sparsity {sparsity} is outside [0, 1)"
                issues.append(Issue("compression", Kind.IMPLAUSIBLE, detail))
                sparsity = None
            resolved = {
                "top1": derive.Resolved(top1, accuracy_column, False),
                "top5": derive.Resolved(),
                "orig_top1": derive.Resolved(baseline, "mean of rn50_baselines.csv", True),
                "orig_top5": derive.Resolved(),
                "delta_top1": derive.Resolved(),
                "delta_top5": derive.Resolved(),
                "compression": derive.Resolved(),
                "speedup": derive.Resolved(),
            }
            if top1 is not None and baseline is not None:
                resolved["delta_top1"] = derive.Resolved(top1 - baseline, "top1 - orig_top1", True)
            if sparsity is not None:
                how = f"1 / (1 - {sparsity_column})"
                resolved["compression"] = derive.Resolved(1.0 / (1.0 - sparsity), how, True)
            detail = "the source reports weight sparsity only, no FLOPs"
            issues.append(Issue("speedup", Kind.MISSING, detail))
            settings = ", ".join(
                f"{key}={value}"
                for key, value in raw.items()
                if key not in (sparsity_column, accuracy_column)
            )
            record = {
                "result_id": f"sos-{slug}-{number}",
                "source": "state-of-sparsity",
                "paper": STATE_OF_SPARSITY_PAPER,
                "year": info.get("year"),
                "venue": info.get("venue"),
                "dataset": "ImageNet",
                "model": "ResNet-50",
                "method": method,
                "num_trials": None,
                "std_top1": None,
                "std_orig_top1": None,
                "params_m": None,
                "orig_params_m": None,
                "gflops": None,
                "orig_gflops": None,
                "notes": settings or None,
            }
            records.append(_record(record, resolved, issues))
    return records


# --------------------------------------------------------------------------- tables


@functools.lru_cache(maxsize=4)
def _tables(data_dir: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(papers, results, issues) of every source, built once per data directory."""
    folder = Path(data_dir)
    papers = _papers(folder)
    rows = _survey_rows(folder, papers)
    _flag_outlier_baselines(rows)
    records = [_finish(row) for row in rows] + _sos_records(folder, papers)
    issue_records = [
        {
            "result_id": r["result_id"],
            "source": r["source"],
            "paper": r["paper"],
            "dataset": r["dataset"],
            "model": r["model"],
            "field": issue.field,
            "kind": issue.kind.value,
            "detail": issue.detail,
        }
        for r in records
        for issue in r.pop("_issues")
    ]
    results = pd.DataFrame.from_records(records, columns=RESULT_COLUMNS)
    for column in ("year", "num_trials"):
        results[column] = results[column].astype("Int64")
    for column in _DERIVABLE + ["std_top1", "std_orig_top1", "params_m", "orig_params_m"]:
        results[column] = results[column].astype(float)
    for column in ("gflops", "orig_gflops"):
        results[column] = results[column].astype(float)
    results["derived"] = results["derived"].astype(bool)
    issues = pd.DataFrame.from_records(issue_records, columns=ISSUE_COLUMNS)
    counts = results.groupby("paper").size()
    papers["results"] = papers["paper"].map(counts).fillna(0).astype(int)
    return papers, results, issues


def _select(table: pd.DataFrame, source: str) -> pd.DataFrame:
    _check_source(source)
    if source == "all":
        return table.copy()
    return table[table["source"] == source].reset_index(drop=True)


def load_papers(data_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per surveyed paper.

    Columns: paper (the survey's short name), title, first_author, year,
    month, venue, compares_to, non_pruning, notes, bibtex, results (number of
    results of this paper, State of Sparsity runs included for its paper).
    """
    return _tables(str(_data_dir(data_dir)))[0].copy()


def load_results(source: str = "survey", data_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per reported result (see the module docstring for every conversion).

    ``source`` is ``"survey"`` (the 551 results of the 81 papers),
    ``"state-of-sparsity"`` (Gale et al.'s 1008 ResNet-50 runs) or ``"all"``.
    Accuracies are fractions; ``compression`` and ``speedup`` are ratios
    (original / remaining); ``params_m``/``gflops`` are the counts as reported.
    """
    return _select(_tables(str(_data_dir(data_dir)))[1], source)


def load_issues(source: str = "survey", data_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per value the data cannot support.

    ``kind`` is missing, contradictory, unparseable or implausible; ``field``
    the quantity or column; ``detail`` the evidence. Nothing here was filled in.
    """
    return _select(_tables(str(_data_dir(data_dir)))[2], source)


def load_export(name: str, data_dir: str | Path | None = None) -> pd.DataFrame:
    """One of the other raw exports (``models``, ``datasets``, ``venues``) as strings."""
    allowed = ("models", "datasets", "venues")
    if name not in allowed:
        raise UserError(f"unknown survey export {name!r}; choose one of {', '.join(allowed)}")
    return pd.DataFrame(read_csv_rows(_data_dir(data_dir) / f"{name}.csv"))

"""Questions asked of the survey tables: which papers, which results, which pairs."""

from __future__ import annotations

import difflib

import pandas as pd

from shrinkbench_core.errors import UserError
from shrinkbench_core.survey.names import survey_dataset_name, survey_model_name

#: Columns of ``survey results`` in the compact (default) view.
RESULT_VIEW = [
    "result_id", "paper", "year", "dataset", "model", "method", "top1", "top5", "orig_top1",
    "delta_top1", "compression", "speedup", "derived",
]  # fmt: skip
#: Columns of ``survey papers`` in the compact (default) view.
PAPER_VIEW = ["paper", "year", "venue", "first_author", "results", "title"]


def _unknown(kind: str, name: str, known: pd.Series) -> UserError:
    choices = sorted(set(known))
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    command = "papers" if kind == "paper" else "pairs"
    return UserError(
        f"the survey has no {kind} called {name!r}{hint} "
        f"(`shrinkbench survey {command}` lists all {len(choices)})"
    )


def resolve_dataset(name: str, results: pd.DataFrame) -> str:
    """The survey's dataset name for ``name`` (ours like ``cifar10`` or theirs), or a UserError."""
    found = survey_dataset_name(name, results["dataset"])
    if found is None:
        raise _unknown("dataset", name, results["dataset"])
    return found


def resolve_model(name: str, results: pd.DataFrame) -> str:
    """The survey's model name for ``name`` (ours like ``resnet56`` or theirs), or a UserError."""
    found = survey_model_name(name, results["model"])
    if found is None:
        raise _unknown("model", name, results["model"])
    return found


def resolve_paper(name: str, papers: pd.DataFrame) -> str:
    """The survey's short paper name (exact or case-insensitive), or a UserError."""
    by_lower = {p.lower(): p for p in papers["paper"]}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise _unknown("paper", name, papers["paper"])


def filter_results(
    results: pd.DataFrame,
    dataset: str | None = None,
    model: str | None = None,
    paper: str | None = None,
) -> pd.DataFrame:
    """Results of one dataset, model and/or paper (names are resolved, see :mod:`.names`)."""
    mask = pd.Series(True, index=results.index)
    if dataset is not None:
        mask &= results["dataset"] == resolve_dataset(dataset, results)
    if model is not None:
        mask &= results["model"] == resolve_model(model, results)
    if paper is not None:
        mask &= results["paper"].str.lower() == paper.lower()
    return results[mask].reset_index(drop=True)


def papers_table(
    papers: pd.DataFrame,
    results: pd.DataFrame,
    dataset: str | None = None,
    model: str | None = None,
) -> pd.DataFrame:
    """Papers with at least one result matching the filters, with the datasets/models they use.

    ``results`` is recounted over the matching results; sorted by year then name.
    """
    matching = filter_results(results, dataset=dataset, model=model)
    counts = matching.groupby("paper").size()
    datasets = matching.groupby("paper")["dataset"].agg(lambda s: ", ".join(sorted(set(s))))
    models = matching.groupby("paper")["model"].agg(lambda s: ", ".join(sorted(set(s))))
    table = papers[papers["paper"].isin(counts.index)].copy()
    table["results"] = table["paper"].map(counts).astype(int)
    table["datasets"] = table["paper"].map(datasets)
    table["models"] = table["paper"].map(models)
    table = table.sort_values(["year", "month", "paper"], na_position="first")
    return table.reset_index(drop=True)


def pairs_table(
    results: pd.DataFrame,
    dataset: str | None = None,
    model: str | None = None,
    min_results: int = 1,
) -> pd.DataFrame:
    """(dataset, model) pairs ranked by how many results report them.

    Columns: dataset, model, results, papers, and how many results give top1,
    compression and speedup. Ties are broken by papers, then names.
    """
    matching = filter_results(results, dataset=dataset, model=model)
    grouped = matching.groupby(["dataset", "model"])
    table = pd.DataFrame(
        {
            "results": grouped.size(),
            "papers": grouped["paper"].nunique(),
            "with_top1": grouped["top1"].count(),
            "with_compression": grouped["compression"].count(),
            "with_speedup": grouped["speedup"].count(),
        }
    ).reset_index()
    table = table[table["results"] >= min_results]
    table = table.sort_values(
        ["results", "papers", "dataset", "model"], ascending=[False, False, True, True]
    )
    return table.reset_index(drop=True)


def most_reported_pair(results: pd.DataFrame, dataset: str) -> tuple[str, str]:
    """The model most often reported on ``dataset`` (the first row of :func:`pairs_table`)."""
    table = pairs_table(results, dataset=dataset)
    if table.empty:
        raise UserError(f"the survey has no results on {dataset!r}")
    return table.loc[0, "dataset"], table.loc[0, "model"]

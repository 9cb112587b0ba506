"""Survey plots: diverged runs can be hidden and are pointed out (issue 19, item 13)."""

from __future__ import annotations

from shrinkbench_core.cli import main
from shrinkbench_core.survey.plot import DIVERGED, plot_pair


def test_diverged_runs_are_noted_and_can_be_left_out(tmp_path):
    everything = plot_pair("ImageNet", "ResNet-50", tmp_path / "all.png", source="all")
    assert everything.diverged == 317 and everything.hidden == 0
    assert f"--min-accuracy {DIVERGED:g}" in everything.describe()
    kept = plot_pair("ImageNet", "ResNet-50", tmp_path / "kept.png", source="all",
                     min_accuracy=0.1)
    assert kept.hidden == 317 and kept.diverged == 0
    assert kept.results == everything.results - 317
    assert "317 results below --min-accuracy left out" in kept.describe()


def test_min_accuracy_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "rn50.png"
    assert main(["survey", "plot", "--dataset", "imagenet", "--model", "resnet50",
                 "--source", "state-of-sparsity", "--min-accuracy", "0.1",
                 "--out", str(out)]) == 0
    assert out.is_file() and "317 results below --min-accuracy" in capsys.readouterr().out
    assert main(["survey", "plot", "--dataset", "imagenet", "--model", "resnet50",
                 "--min-accuracy", "5", "--out", str(out)]) == 2
    assert "fraction in [0, 1]" in capsys.readouterr().err

"""``sb.run_sweep`` from a script without a ``__main__`` guard and from ``python - < file``.

Spawned workers used to re-run an unguarded script's top level, start the sweep
again inside each worker, and die ("A process in the process pool was
terminated abruptly"). Workers no longer import the caller's ``__main__``.
"""

from __future__ import annotations

import json
import multiprocessing.spawn
import subprocess
import sys
import textwrap
import types

import pytest

from shrinkbench_core.sweep.local import main_module_hidden

SCRIPT = textwrap.dedent(
    """
    import sys
    import shrinkbench_core as sb

    summary = sb.run_sweep(
        {{
            "output": {output!r},
            "strategies": [{{"name": "GlobalMagWeight"}}],
            "compressions": [4],
            "shared": {{
                "dense": {{"epochs": 1}},
                "finetune": {{"epochs": 1}},
                "model": {{"params": {{"hidden_sizes": [16]}}}},
                "metrics": ["size"],
            }},
        }},
        workers=1,
        threads=1,
        quiet=True,
    )
    print(summary.line())
    sys.exit(summary.exit_code)
    """
)


def test_spawned_workers_are_not_told_to_import_main(monkeypatch):
    main = types.ModuleType("__main__")
    main.__file__ = "/somewhere/study.py"
    main.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert "init_main_from_path" in multiprocessing.spawn.get_preparation_data("x")
    with main_module_hidden():
        data = multiprocessing.spawn.get_preparation_data("x")
        assert "init_main_from_path" not in data and "init_main_from_name" not in data
    assert main.__file__ == "/somewhere/study.py" and main.__spec__ is None


@pytest.mark.slow
@pytest.mark.parametrize("how", ["script", "stdin"])
def test_sweep_from_an_unguarded_script(tmp_path, how):
    output = tmp_path / "study"
    script = tmp_path / "study.py"
    script.write_text(SCRIPT.format(output=str(output)))
    if how == "script":
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)
    else:
        done = subprocess.run([sys.executable, "-"], stdin=script.open(), capture_output=True,
                              text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 runs: 1 succeeded" in done.stdout
    record = json.loads((output / "sweep.json").read_text())
    assert record["summary"]["succeeded"] == 1
    (run,) = record["runs"]
    assert run["status"] == "succeeded" and run["worker"]  # ran in a pool worker

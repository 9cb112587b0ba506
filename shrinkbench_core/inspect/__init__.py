"""Inspection: ``shrinkbench show RUN_DIR``, ``shrinkbench show strategy NAME`` and
``shrinkbench-run --print-config``. Importing this package imports no torch."""

"""The stages of a run, in order; each module states its checkpoint and resume contract.

* :mod:`.dense`: the dense weights (trained once per dense digest and cached, or loaded).
* :mod:`.pruning`: the schedule's pruning before fine-tuning (one-shot, iterative rounds...).
* :mod:`.finetune`: fine-tuning with masks held, or changed by the schedule during training;
  checkpointed every epoch.
* :mod:`.evaluate`: the metrics of each stage, the best-validation epoch, ``metrics.json``.

:class:`~shrinkbench_core.experiment.runner.Experiment` runs them in this order.
"""

"""Paper experiments rerun on simulated runs (``diffscreen benchmark <paper>``).

One module per paper.  Each exposes ``run(out_dir, *, quick=False, seed=...)``
that runs the experiments, writes ``docs/benchmarks/<paper>.md`` (our numbers
beside the paper's) with its PNG figures, and returns the numbers as a dict so
that tests can assert the qualitative findings of the ``--quick`` mode.
What every module shares (run folders, job caches keyed by a hash of their
settings, the process pool, findings, markdown tables and paragraphs, figures
and the ``.md`` / ``.json`` writer) is in ``_harness``; each paper's module
keeps only its experiments.  What is not an experiment lives in its package:
the keep-decision metrics in :mod:`diffscreen.evaluate.metrics`, real-frame
scoring in :mod:`diffscreen.evaluate.labelled`, the DiffraNet-style frames in
:mod:`diffscreen.simulate.diffranet`, the metadata faults and cached training
inputs in :mod:`diffscreen.simulate.metadata`.  Benchmarks sit beside the pipeline: they
may import every other subpackage, including ``simulate`` and ``baselines``.
"""

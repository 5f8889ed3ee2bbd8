"""Reference implementations the tests hold the production code to.

Plain, whole-array statements of what the compiled or batched code in
``src/diffscreen`` computes; only the tests (and ``bench/``) use them:

``simulate``
    The simulator's noise and spot model in numpy (spot profiles, Poisson
    counts, correlated noise, the whole-frame digitiser), against which the
    compiled kernels of :mod:`diffscreen.simulate._kernels` are checked.
``torch_preprocess``
    The fast path's preprocessing as batched torch operations (GPU benchmark
    of ``bench/throughput.py``), checked against
    :class:`diffscreen.preprocess.FastPreprocessor`.
"""

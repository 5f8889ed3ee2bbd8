"""Reference implementations the tests hold the production code to.

Plain, whole-array statements of what the compiled or batched code in
``src/diffscreen`` computes; only the tests (and ``bench/``) use them:

``simulate``
    The simulator's noise and spot model in numpy (spot profiles, Poisson
    counts, correlated noise, the whole-frame digitiser), against which the
    compiled kernels of :mod:`diffscreen.simulate._kernels` are checked.
``pooling``
    Max-pooling a window to the network's grid by scattering every valid
    pixel (``np.fmax.at``), against which the compiled
    :func:`diffscreen.preprocess.pooling.max_pool_window` is checked.
``torch_preprocess``
    The fast path's preprocessing as batched torch operations (GPU benchmark
    of ``bench/throughput.py``), checked against
    :class:`diffscreen.preprocess.FastPreprocessor`.
"""

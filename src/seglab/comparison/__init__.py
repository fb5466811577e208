"""The comparison of evaluated runs behind ``python src/compare.py`` (config:
conf/compare.yaml; the method: docs/numbers.md).

Modules, in the order a comparison goes through them: ``runs`` (the run folders and
multirun folders given, grouped into configurations by their overrides less ``seed=``, the
split and the per-image confusion matrices, checked to be over the same images), ``stats``
(the paired, hierarchical bootstrap in NumPy), ``report`` (comparison.md / .json / .png and
the console table) and ``command`` (``compare``: start to end). The verdict words and rule
are shared with the reproduction report (``seglab.reproduce.verdicts``).
"""

"""The reproduction report behind ``python src/reproduce.py`` (config: conf/reproduce.yaml).

For each finding of the catalogue: every run is a ``src/train.py`` config (the finding's
overrides on top of the common ones, scaled by ``budget``) trained in this process with
``seglab.pipeline.train``, into ``<report>/runs/<finding>/<run>/`` (metrics.json, the best
checkpoint, csv/metrics.csv, timing.json). Then the best checkpoints predict the validation
images (the grid, and the boundary F-score when the finding asks for it), the learning curves
are drawn from the CSV logs, the finding's checks are evaluated and ``report.md`` (plus
``report.json`` and ``figures/*.png``) is written into the report folder.

Modules, in the order a finding goes through them: ``training`` (the budget plan, one run
trained and timed), ``prediction`` (its best checkpoint on the validation images),
``verdicts`` (the checks and the verdict: pure functions), ``figures`` (learning curves and
prediction grids), ``markdown`` (report.md and report.json) and ``command`` (``reproduce``:
every finding, start to end).
"""

"""The measured results page behind ``python src/results.py`` (config: conf/results.yaml).

Every CPU recipe (``conf/experiment/cpu_*.yaml``) is trained once per variant as its own
``src/train.py`` process, timed around it, into ``<run folder>/runs/<recipe>/<variant>/``;
the run folders are read back (metrics.json, time_split.json, the best checkpoint) and
docs/results.md is written with a time-to-accuracy plot per recipe in docs/results/.

Modules: ``runs`` (running and reading back), ``table`` (the markdown: a pure function of
the records), ``curves`` (the plots) and ``command`` (``results``: all of it).
"""

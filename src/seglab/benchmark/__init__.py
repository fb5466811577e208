"""The benchmark behind ``python src/benchmark.py``: what seglab costs over a plain loop.

One fixed batch (from the configured data, after augmentation) feeds both training loops, so
the comparison measures the training step alone: seglab's ``SegmentationModule`` through a
Lightning ``Trainer`` (logging included) against a minimal PyTorch loop with the same model,
loss, optimizer, precision and memory format. The two loops run in alternating rounds
(seglab, plain, plain, seglab, ...), so a shared machine's drifting speed hits both alike, and
the ratio is the geometric median of the per-round ratios. Data loading is timed on its own.
Peak memory is the process's peak RSS on CPU (the kernel's mark is reset before each phase,
after freeing what the previous phase left) and the allocator's peak on CUDA.

Modules: ``command`` (the whole benchmark, ``benchmark.json``), ``training_loops`` (seglab
against the plain loop), ``speeds`` (inference, ONNX, metric update, data loading),
``flops``, ``memory``, ``timing`` (medians and spreads) and ``tables`` (the console table and
the README's markdown table; ``python -m seglab.benchmark <folder>`` prints the latter).
"""

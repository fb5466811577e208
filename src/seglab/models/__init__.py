"""Architectures: plain ``nn.Module``s that know nothing about training.

Each takes ``in_channels`` and ``num_classes``, returns logits at the input's resolution for
any input size (a tensor, or a dict with ``"out"`` and optionally ``"aux"``), and exposes the
part that ``model.train_trunk=false`` freezes as ``.encoder``.
"""

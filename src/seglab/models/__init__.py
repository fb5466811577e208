"""Architectures: plain ``nn.Module``s that know nothing about training.

Every net subclasses ``base.SegmentationNet`` (the network contract: ``.encoder``, the trunk
that ``model.train_trunk=false`` freezes with ``freeze_encoder()``; ``default_weights`` and
``load_encoder_weights()`` for ImageNet weights; ``compile_dynamic``). U-Net, DeepLabV3+, FCN
and PSPNet take any encoder of the table in ``encoders.py``. Where weights come from and how
they load: ``pretrained.py`` and ``state_dicts.py``.
"""

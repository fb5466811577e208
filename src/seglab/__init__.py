"""seglab: an experiment framework for semantic image segmentation."""

import os

# albumentations checks for updates over the network at import unless told not to.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

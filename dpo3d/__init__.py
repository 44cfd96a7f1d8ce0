"""dpo3d: preference optimisation of language models, with the 3D-properties of DPO measured.

The library: everything that computes. It never imports the command layer.
"""

__version__ = "0.1.0"

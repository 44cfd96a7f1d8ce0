"""The 3D watch, independent of any training loop: what the probes measure and what the detector reads.

- :mod:`dpo3d.watch.detector`: names the 3D-property a run shows from its logged probe records
  (drastic drop, likelihood displacement, degradation, dispersion), per token and summed, above
  the precision's measured noise floor;
- :mod:`dpo3d.watch.divergence`: token-level dispersion, the probabilities at the first position
  where a pair's chosen and rejected responses differ.
"""

"""dpo3d's command layer (installed as ``dpo3d_cli``): flags -> config -> one library call -> output."""

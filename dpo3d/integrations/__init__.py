"""dpo3d's 3D watch in other trainers: :mod:`dpo3d.integrations.trl` (a 🤗 ``TrainerCallback`` for TRL's DPOTrainer)."""

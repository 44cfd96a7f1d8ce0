"""Models: loading (the bundled SmolLM2, hub ids, folders), LoRA adapters, tiny random models, host memory."""

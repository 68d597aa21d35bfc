"""Training RAIN models: data, the staggered-noise objective, the trainer, the demo codec, evaluation."""

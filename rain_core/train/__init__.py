"""Training RAIN models: data (synthetic characters, videos), the staggered-noise objective, the trainer,
the demo codec, evaluation."""

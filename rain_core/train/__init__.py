"""Training RAIN models: the run's settings, data (synthetic characters, videos), the staggered-noise
objective, the learning-rate schedule, the trainer, the demo codec, evaluation and export."""

"""Everything that reads or writes weights files.

- `checkpoints`: the one table of checkpoint file names; reading, checking and loading a state dict.
- `loading`: a weights directory, checked part by part or loaded into `RainComponents`.
- `profiles`: which profile runs with the weights at hand (`resolve_profile`, `load_model`).
- `manifest`: where the official weights come from; `fetch`: downloading them;
  `lock`: the recorded size and sha256 of every fetched file.
"""

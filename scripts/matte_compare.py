"""How well two mattes find the demo model's characters: mediapipe's selfie segmentation against
the server's colour matte (`server.media.alpha.colour_matte`), as the mean IoU with the true figure.

The demo model animates held-out synthetic characters (plain backgrounds only) from their own
driving images; the true figure is where the true frame differs from the character's background.
Run: PYTHONPATH=. python scripts/matte_compare.py [--clips 12] (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12, help="held-out seeds to try (gradient backgrounds skipped)")
    parser.add_argument("--frames", type=int, default=24, help="driving frames per clip")
    args = parser.parse_args()

    import mediapipe as mp

    from rain_core.stream.engine import QueueModel, StreamEngine
    from rain_core.train.synthetic.clip import make_clip
    from rain_core.train.synthetic.drawing import draw_background
    from rain_core.weights.profiles import load_model
    from server.media.alpha import colour_matte, key_colour

    torch.set_num_threads(1)
    model = QueueModel(load_model("demo", None, device="cpu"))
    config = model.config
    segmentation = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
    scores: dict[str, list[float]] = {"selfie_segmentation": [], "colour_matte": []}
    clips = 0
    for seed in range(args.clips):
        clip = make_clip(seed, frames=args.frames, width=config.width, height=config.height, split="val")
        if clip.character.background != "plain":
            continue
        clips += 1
        engine = StreamEngine(model, seed=0)
        engine.set_reference(clip.reference)
        key = key_colour(Image.fromarray(clip.reference))
        background = draw_background(clip.character, config.width, config.height).astype(int)
        outputs = []
        for start in range(0, args.frames, config.frames_per_group):
            frames = engine.step(clip.driving[start:start + config.frames_per_group])
            if frames is not None:
                outputs.extend(np.asarray(frames.permute(0, 2, 3, 1).clamp(0, 1).mul(255).round().byte()))
        # Output i shows driving frame i: the queue delays it, it does not shift it.
        for output, truth in zip(outputs, clip.frames, strict=False):
            figure = np.abs(truth.astype(int) - background).sum(-1) > 0
            found = {
                "selfie_segmentation": segmentation.process(output).segmentation_mask > 0.5,
                "colour_matte": colour_matte(output, key) >= 128,
            }
            for name, mask in found.items():
                scores[name].append(float((mask & figure).sum() / max((mask | figure).sum(), 1)))
    result = {"clips": clips, "frames": len(scores["colour_matte"]),
              **{f"mean_iou_{name}": round(float(np.mean(v)), 3) for name, v in scores.items()}}
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

"""Synthetic training clips: cartoon characters, their smooth motion, and the paired driving images.

Generated on the fly on the CPU for a small demo model. A clip is one character (head shape,
palette, clothes texture, hair, background) moving smoothly: head turns, tilts and nods,
blinks, talking, arm swings and a little body sway. Every frame is drawn *from* its landmarks
(`pose_at` -> `Landmarks` -> `draw_character`) and the driving image is `render_body` of the
same landmarks, so each pair is exact by construction.

    clip = make_clip(seed, frames=16, width=128, height=128)   # split="train" or "val"
    clip.reference, clip.frames, clip.driving, clip.landmarks

Coordinates follow `rain_core.driving.landmarks`: (x, y) normalised to the frame, y down;
iBUG 68 face points, OpenPose 18 body points. Characters are laid out for square frames; other
aspect ratios stretch them exactly as they stretch the driving image.

The modules, in the order a clip is made: `skeleton` (the 3D head template and the arms'
joints), `palette` and `character` (a random character fitted to the frame), `motion` (smooth
motion within the limits, and the pose it gives at an instant), `landmarks` (a pose as
landmarks), `drawing` (the character drawn from landmarks), `clip` (clips and contact sheets).
"""

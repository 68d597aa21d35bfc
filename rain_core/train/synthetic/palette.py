"""The character's colours: skin, hair, eyes, lips, clothes and a background that stands out."""

from __future__ import annotations

import colorsys

import numpy as np

Colour = tuple[int, int, int]  # RGB


def _colour(h: float, s: float, v: float) -> Colour:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (round(r * 255), round(g * 255), round(b * 255))


def colour_distance(a: Colour, b: Colour) -> float:
    """How clearly two colours differ: their distance in RGB (0-441)."""
    return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


def _sample_skin(rng: np.random.Generator) -> Colour:
    if rng.random() < 0.15:  # fantasy skin: blue, green, lilac...
        return _colour(rng.random(), rng.uniform(0.25, 0.55), rng.uniform(0.6, 0.95))
    return _colour(rng.uniform(0.04, 0.1), rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.98))


def _sample_hair(rng: np.random.Generator) -> Colour:
    kind = rng.choice(["black", "brown", "blonde", "red", "grey", "fantasy"], p=[0.2, 0.25, 0.15, 0.1, 0.1, 0.2])
    h, s, v = {
        "black": (rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.3), rng.uniform(0.08, 0.2)),
        "brown": (rng.uniform(0.05, 0.1), rng.uniform(0.5, 0.8), rng.uniform(0.25, 0.5)),
        "blonde": (rng.uniform(0.1, 0.15), rng.uniform(0.4, 0.7), rng.uniform(0.75, 0.95)),
        "red": (rng.uniform(0.01, 0.05), rng.uniform(0.65, 0.9), rng.uniform(0.55, 0.85)),
        "grey": (rng.uniform(0.0, 1.0), rng.uniform(0.0, 0.06), rng.uniform(0.55, 0.85)),
        "fantasy": (rng.uniform(0.0, 1.0), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9)),
    }[str(kind)]
    return _colour(h, s, v)


def _sample_iris(rng: np.random.Generator) -> Colour:
    h, s, v = [
        (0.07, 0.75, 0.35),  # brown
        (0.58, 0.65, 0.75),  # blue
        (0.33, 0.6, 0.55),  # green
        (0.55, 0.15, 0.55),  # grey
        (0.0, 0.0, 0.12),  # black
        (0.8, 0.55, 0.65),  # violet
    ][rng.integers(6)]
    return _colour(h + rng.uniform(-0.03, 0.03), s * rng.uniform(0.85, 1.1), v * rng.uniform(0.85, 1.1))


def sample_palette(rng: np.random.Generator) -> dict[str, Colour]:
    skin = _sample_skin(rng)
    sh, ss, sv = colorsys.rgb_to_hsv(*(c / 255 for c in skin))
    clothes_hue = rng.random()
    clothes = _colour(clothes_hue, rng.uniform(0.35, 0.9), rng.uniform(0.35, 0.95))
    if rng.random() < 0.5:  # accent: a complementary hue, or the same hue lighter or darker
        accent = _colour(clothes_hue + rng.uniform(0.35, 0.65), rng.uniform(0.3, 0.9), rng.uniform(0.4, 1.0))
    else:
        ch, cs, cv = colorsys.rgb_to_hsv(*(c / 255 for c in clothes))
        accent = _colour(ch, cs * rng.uniform(0.2, 0.6), cv + 0.4) if cv < 0.6 else _colour(ch, cs, cv - 0.4)
    # The background differs clearly from the skin and the clothes, so the character stands out.
    for _ in range(20):
        top = _colour(rng.random(), rng.uniform(0.05, 0.5), rng.uniform(0.5, 0.97))
        if min(colour_distance(top, skin), colour_distance(top, clothes)) > 90:
            break
    th, ts, tv = colorsys.rgb_to_hsv(*(c / 255 for c in top))
    bottom = _colour(th + rng.uniform(-0.1, 0.1), ts + rng.uniform(0.0, 0.2), tv - rng.uniform(0.1, 0.35))
    return {
        "skin": skin,
        "hair": _sample_hair(rng),
        "iris": _sample_iris(rng),
        "lips": _colour(0.98 + rng.uniform(-0.03, 0.03), max(ss, 0.3) + rng.uniform(0.15, 0.35),
                        sv * rng.uniform(0.6, 0.85)),
        "clothes": clothes,
        "clothes_accent": accent,
        "trousers": _colour(rng.random(), rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.5)),
        "outline": _colour(sh, 0.4, rng.uniform(0.08, 0.18)),
        "background_top": top,
        "background_bottom": bottom,
    }

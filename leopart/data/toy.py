"""The embedded default dataset: deterministic synthetic images of part-based objects on "stuff".

Why it looks like this
----------------------
The toy-DINO feasibility notes (``shared/notes/toy-dino-feasibility.md``) found that when the
background has random colours and textures, (a) k-means spends its clusters on splitting the
background and (b) the CLS attention locks onto the background, because the background is the
cheapest cue for telling images apart. Lesson: **objects, not backgrounds, must be what tells
images apart.** Hence:

* **Background** ("stuff", always label 0) comes from only four types with a consistent look and
  small colour jitter: *sky* (smooth light-blue vertical gradient), *grass* (green fine noise),
  *sand* (beige with sparse dark dots), *water* (blue low-contrast waves). An image has one stuff
  type (40 %) or sky above one ground type (60 %), split at a random, slightly tilted horizon.
* **Objects** (labels 1..6, :data:`leopart.data.classes.TOY_CLASSES`) are made of 2–4 parts with a
  fixed arrangement in an object frame. Every part has its own colour *and* texture (flat,
  stripes, spots, checker, noise, rings); parts are shared within a class (same palette/texture,
  small jitter) and distinct across classes, so part-level features carry the class:

  ============  =============================================================================
  quadruped     legs (dark, horizontal stripes), body (brown with cream spots), head (flat dark)
  bird          body (red noise), wing (grey-blue stripes), head (flat black-red), beak (yellow)
  car           window (cyan diagonal stripes), body (flat magenta), wheels (black/grey rings)
  tree          trunk (brown vertical stripes), crown (dark green with yellow-green spots)
  snowman       two discs (flat white), hat (black with red bands), nose (flat orange)
  fish          tail (yellow checker), body (orange with white bands), eye (flat black)
  ============  =============================================================================

* 1–2 objects per image (uniform), drawn in order so later objects occlude earlier ones. Per
  object: the unit object frame spans 0.6–0.95 of the image side; the parts cover about a third
  of that frame, so an object's √area is ≈ 0.33–0.55 of the image side and the foreground share
  is ≈ 28 % of the pixels on average (VOC val: ≈ 30 %). The centre is uniform over the image
  minus a border of 0.15 object units, so objects are often cut by the image border, as in VOC;
  rotation ±20°, random horizontal flip. Per part: colour jitter N(0, 0.04), offset N(0, 0.02)
  object units, size ×[0.92, 1.08], angle N(0, 5°). Finally pixel noise N(0, 0.02) on the
  whole image (colours in [0, 1]).
* **Illumination** varies per object: all its colours are scaled by a brightness factor
  ×[0.6, 1.4], the range of the brightness jitter of DINO's augmentation. Real objects are seen
  under different lighting; a learned backbone can become invariant to it, a random projection of
  pixels (the random-init baseline) cannot.
* **Hue** varies per object (design v4): all its colours are rotated about the grey axis by one
  angle uniform in ±90° (:func:`hue_rotation`; greys stay grey, the RGB mean is kept), drawn after
  the brightness factor. Cars come in many colours; a class is then told by its parts' textures,
  shapes and arrangement and by their *relative* colours, not by a fixed palette, which a random
  projection of pixels separates as well as any learned feature (random-init K=30 many-to-one
  mIoU on 300 val images, k-means seeds 0–4: 47.7 on v3, 36.9 on v4). DINO's augmentation for the toy has no hue
  jitter: with it, the CLS attention went to the background (``docs/experiments/toy-dino-cpu.md``).
* **Design version 4** (:data:`DESIGN_VERSION`, recorded in the dataset's ``design.json`` and in
  the rule's params, so a design change regenerates every artefact downstream) adds the per-object
  hue to version 3. Version 3 placed objects anywhere and varied their brightness; version 2 kept
  the centre ≥ 0.3 object units from the border and drew 1–3 objects at brightness ×[0.85, 1.15];
  its objects were centred by construction, so a fixed centred Gaussian found them as well as any
  attention map could (prior foreground IoU 0.454, ROC AUC 0.80; now 0.296 and 0.66), and the
  validation check "attention beats a centre prior" could not tell attention from geometry
  (``docs/experiments/toy-dino-cpu.md``). On 300 val images the random-init ViT's K=30
  many-to-one mIoU falls from 50.9 (v2) to 44.0 (v3).
* **Masks** hold the class index per pixel, 0 = background, and a VOC-style ignore band (255):
  every pixel that has a different label within ``max(1, round(image_size / 100))`` pixels
  (Chebyshev distance) is set to 255, i.e. a band of about one pixel on each side of every
  boundary at 128².

Everything is vectorised over pixels (coordinate grids over each primitive's bounding box); one
128² image renders in ≈ 5 ms on one core, so 1200 images (PNG writing included) take ≈ 10–15 s.
Image ``i`` of a split is rendered from its own generator ``default_rng([seed, split_code, i])``
(:func:`image_rng`), so train and val differ, splits are reproducible, and any prefix of a split is
independent of its length.

Layout written by :func:`generate_toy`::

    <out_dir>/images/<name>.png   RGB uint8
    <out_dir>/masks/<name>.png    mode "L", values {0..6, 255}
    <out_dir>/sets/train.txt      one name per line
    <out_dir>/sets/val.txt
    <out_dir>/classes.json        ["background", "quadruped", ...]
    <out_dir>/design.json         {"design_version": 4, "image_size": ..., "seed": ..., ...}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from leopart.data.classes import IGNORE_LABEL, TOY_CLASSES
from leopart.data.dataset import SplitIndex
from leopart.errors import LeopartError
from leopart.io import atomic_dir

SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1}
STUFF_TYPES: tuple[str, ...] = ("sky", "grass", "sand", "water")

# ----------------------------------------------------------------------------------------------
# Object catalogue (object frame: u to the right, v downwards, object roughly within [-0.5, 0.5]²)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Primitive:
    """One filled shape in the object frame.

    ``kind`` is ``"ellipse"`` or ``"rect"`` (centre ``(cx, cy)``, half-sizes ``(hw, hh)``,
    rotation ``angle`` in degrees) or ``"poly"`` (convex polygon ``verts`` in the object frame).
    """

    kind: str
    cx: float = 0.0
    cy: float = 0.0
    hw: float = 0.0
    hh: float = 0.0
    angle: float = 0.0
    verts: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class Part:
    """A coloured, textured object part made of one or more primitives.

    The pixel colour is ``c1 * (1 - t) + c2 * t`` with the texture value ``t ∈ [0, 1]``;
    ``texture`` ∈ {flat, stripes, spots, checker, noise, rings}; ``freq`` in cycles per object unit;
    ``tex_angle`` (degrees) orients stripes.
    """

    name: str
    prims: tuple[Primitive, ...]
    c1: tuple[float, float, float]
    c2: tuple[float, float, float]
    texture: str
    freq: float = 0.0
    tex_angle: float = 0.0


def _poly(*verts: tuple[float, float]) -> Primitive:
    return Primitive("poly", verts=tuple(verts))


OBJECT_CLASSES: dict[str, tuple[Part, ...]] = {
    "quadruped": (
        Part("legs", tuple(Primitive("rect", x, 0.27, 0.05, 0.17) for x in (-0.3, -0.16, 0.14, 0.28)),
             (0.22, 0.13, 0.07), (0.48, 0.38, 0.27), "stripes", 7.0, 90.0),
        Part("body", (Primitive("ellipse", 0.0, 0.0, 0.40, 0.21),),
             (0.55, 0.32, 0.14), (0.92, 0.86, 0.72), "spots", 6.0),
        Part("head", (Primitive("ellipse", 0.40, -0.22, 0.15, 0.12, -30.0),),
             (0.32, 0.18, 0.09), (0.32, 0.18, 0.09), "flat"),
    ),
    "bird": (
        Part("body", (Primitive("ellipse", -0.04, 0.06, 0.36, 0.25, -10.0),),
             (0.82, 0.14, 0.10), (0.50, 0.04, 0.05), "noise"),
        Part("wing", (Primitive("ellipse", -0.10, 0.02, 0.26, 0.11, 18.0),),
             (0.30, 0.32, 0.52), (0.66, 0.68, 0.86), "stripes", 9.0, 0.0),
        Part("head", (Primitive("ellipse", 0.30, -0.22, 0.16, 0.16),),
             (0.22, 0.04, 0.09), (0.22, 0.04, 0.09), "flat"),
        Part("beak", (_poly((0.42, -0.29), (0.64, -0.20), (0.42, -0.12)),),
             (0.96, 0.80, 0.10), (0.96, 0.80, 0.10), "flat"),
    ),
    "car": (
        Part("window", (_poly((-0.30, -0.06), (0.24, -0.06), (0.12, -0.34), (-0.22, -0.34)),),
             (0.62, 0.90, 0.96), (0.32, 0.55, 0.68), "stripes", 7.0, 45.0),
        Part("body", (Primitive("rect", 0.0, 0.06, 0.50, 0.16),),
             (0.85, 0.10, 0.48), (0.85, 0.10, 0.48), "flat"),
        Part("wheels", (Primitive("ellipse", -0.29, 0.23, 0.14, 0.14),
                        Primitive("ellipse", 0.29, 0.23, 0.14, 0.14)),
             (0.07, 0.07, 0.07), (0.58, 0.58, 0.60), "rings", 9.0),
    ),
    "tree": (
        Part("trunk", (Primitive("rect", 0.0, 0.30, 0.09, 0.21),),
             (0.47, 0.29, 0.12), (0.30, 0.17, 0.07), "stripes", 14.0, 0.0),
        Part("crown", (Primitive("ellipse", 0.0, -0.13, 0.38, 0.33),),
             (0.06, 0.36, 0.11), (0.58, 0.78, 0.14), "spots", 7.0),
    ),
    "snowman": (
        Part("discs", (Primitive("ellipse", 0.0, 0.22, 0.27, 0.26), Primitive("ellipse", 0.0, -0.12, 0.19, 0.18)),
             (0.96, 0.96, 0.98), (0.96, 0.96, 0.98), "flat"),
        Part("hat", (Primitive("rect", 0.0, -0.36, 0.13, 0.09), Primitive("rect", 0.0, -0.27, 0.21, 0.03)),
             (0.09, 0.09, 0.10), (0.75, 0.10, 0.10), "stripes", 9.0, 90.0),
        Part("nose", (_poly((0.13, -0.16), (0.32, -0.12), (0.13, -0.08)),),
             (0.96, 0.50, 0.08), (0.96, 0.50, 0.08), "flat"),
    ),
    "fish": (
        Part("tail", (_poly((-0.26, 0.0), (-0.52, -0.24), (-0.52, 0.24)),),
             (0.95, 0.85, 0.12), (0.65, 0.55, 0.05), "checker", 10.0),
        Part("body", (Primitive("ellipse", 0.06, 0.0, 0.40, 0.25),),
             (0.96, 0.52, 0.08), (0.98, 0.93, 0.88), "stripes", 4.5, 0.0),
        Part("eye", (Primitive("ellipse", 0.29, -0.06, 0.06, 0.06),),
             (0.04, 0.04, 0.05), (0.04, 0.04, 0.05), "flat"),
    ),
}
assert list(OBJECT_CLASSES) == TOY_CLASSES[1:]

#: Version of the rendering rules below; bump it whenever a change alters the rendered images.
DESIGN_VERSION = 4

SCALE_RANGE = (0.6, 0.95)        # object-frame unit (pixels) / image side
CENTRE_MARGIN = 0.15             # object centre at least this many object units from the border
N_OBJECTS = (1, 2)               # objects per image, uniform in [lo, hi]
ROTATION_DEG = 20.0
BRIGHTNESS_RANGE = (0.6, 1.4)
HUE_ROTATION_DEG = 90.0           # per-object hue rotation about the grey axis, uniform in ±this
PART_COLOUR_SIGMA = 0.04
PART_OFFSET_SIGMA = 0.02
PART_SIZE_RANGE = (0.92, 1.08)
PART_ANGLE_SIGMA = 5.0
PIXEL_NOISE_SIGMA = 0.02


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that renders image ``index`` of ``split`` (``"train"``/``"val"``) for ``seed``."""
    if split not in SPLIT_CODES:
        raise LeopartError(f"split: unknown toy split {split!r} (expected one of {sorted(SPLIT_CODES)})")
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def boundary_width(image_size: int) -> int:
    """Reach (pixels) of the 255 ignore band around label boundaries: ``max(1, round(S / 100))``."""
    return max(1, int(round(image_size / 100)))


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _render_stuff(kind: str, rng: np.random.Generator, s: int) -> np.ndarray:
    """Full-image ``(s, s, 3)`` float32 rendering of one stuff type (colours in [0, 1])."""
    y = (np.arange(s, dtype=np.float32) + 0.5)[:, None] / s          # (s, 1), 0 top .. 1 bottom
    x = (np.arange(s, dtype=np.float32) + 0.5)[None, :] / s          # (1, s)
    jit = rng.normal(0.0, 0.025, 3).astype(np.float32)
    if kind == "sky":
        top = np.array([0.45, 0.65, 0.92], np.float32) + jit
        bottom = np.array([0.78, 0.88, 0.97], np.float32) + jit
        img = top + (bottom - top) * y[..., None]                     # (s, 1, 3)
        return np.broadcast_to(img, (s, s, 3)).copy()
    if kind == "grass":
        base = np.array([0.30, 0.57, 0.20], np.float32) + jit
        n = rng.standard_normal((s, s, 1), dtype=np.float32)
        return base + 0.07 * n * np.array([0.7, 1.0, 0.5], np.float32)
    if kind == "sand":
        base = np.array([0.86, 0.77, 0.56], np.float32) + jit
        img = base + 0.015 * rng.standard_normal((s, s, 1), dtype=np.float32)
        dots = rng.random((s, s)) < 0.025
        img[dots] = np.array([0.58, 0.48, 0.33], np.float32) + jit
        return img
    if kind == "water":
        base = np.array([0.16, 0.38, 0.62], np.float32) + jit
        f1, f2, ph = rng.uniform(10, 16), rng.uniform(1.5, 3.0), rng.uniform(0, 2 * np.pi)
        w = np.sin(2 * np.pi * (f1 * y + 0.12 * np.sin(2 * np.pi * f2 * x + ph)) + ph)  # (s, s)
        return base + 0.045 * w[..., None] * np.array([0.6, 0.8, 1.0], np.float32)
    raise ValueError(kind)


def _render_background(rng: np.random.Generator, s: int) -> np.ndarray:
    """``(s, s, 3)`` float32 background: one stuff type, or sky above a ground type."""
    if rng.random() < 0.4:
        return _render_stuff(STUFF_TYPES[rng.integers(len(STUFF_TYPES))], rng, s)
    ground = ("grass", "sand", "water")[rng.integers(3)]
    sky = _render_stuff("sky", rng, s)
    low = _render_stuff(ground, rng, s)
    horizon, slope = rng.uniform(0.25, 0.6) * s, rng.uniform(-0.1, 0.1)
    yy = np.arange(s, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(s, dtype=np.float32)[None, :] + 0.5
    below = yy > horizon + slope * (xx - s / 2)
    return np.where(below[..., None], low, sky)


def _rot(deg: float) -> tuple[float, float]:
    r = np.deg2rad(deg)
    return float(np.cos(r)), float(np.sin(r))


def _texture(part: Part, u: np.ndarray, v: np.ndarray, p: np.ndarray, q: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Texture value ``t ∈ [0, 1]`` (float32, shape of ``u``) at object-frame ``(u, v)``.

    ``(p, q)`` are the same points relative to the primitive's centre (used by ``rings``).
    """
    f = part.freq
    if part.texture == "flat":
        return np.zeros(u.shape, np.float32)
    if part.texture == "stripes":
        c, s = _rot(part.tex_angle)
        return (np.sin(2 * np.pi * f * (u * c + v * s)) > 0).astype(np.float32)
    if part.texture == "spots":
        fu, fv = np.mod(u * f, 1.0) - 0.5, np.mod(v * f, 1.0) - 0.5
        return (fu * fu + fv * fv < 0.09).astype(np.float32)
    if part.texture == "checker":
        return np.mod(np.floor(u * f) + np.floor(v * f), 2.0).astype(np.float32)
    if part.texture == "noise":
        return rng.random(u.shape, dtype=np.float32)
    if part.texture == "rings":
        return (np.sin(2 * np.pi * f * np.sqrt(p * p + q * q)) > 0).astype(np.float32)
    raise ValueError(part.texture)


def _extent(prim: Primitive, dx: float, dy: float, size: float) -> tuple[float, float, float]:
    """Centre ``(u, v)`` and bounding radius (object units) of a jittered primitive."""
    if prim.kind == "poly":
        verts = np.asarray(prim.verts, np.float32)
        centre = verts.mean(0)
        radius = float(np.sqrt(((verts - centre) ** 2).sum(1)).max()) * size
        return float(centre[0]) + dx, float(centre[1]) + dy, radius
    radius = (max(prim.hw, prim.hh) if prim.kind == "ellipse" else float(np.hypot(prim.hw, prim.hh))) * size
    return prim.cx + dx, prim.cy + dy, radius


def _inside(prim: Primitive, u: np.ndarray, v: np.ndarray, dx: float, dy: float, size: float,
            dang: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean coverage of a jittered primitive plus its centred coordinates ``(p, q)``.

    The jitter (offset ``dx, dy``, size factor ``size``, extra rotation ``dang`` degrees) is applied
    about the primitive's centre (polygon: vertex mean).
    """
    if prim.kind == "poly":
        verts = np.asarray(prim.verts, np.float32)
        centre = verts.mean(0)
        c, s = _rot(dang)
        rel = (verts - centre) * size
        verts = centre + np.array([dx, dy], np.float32) + rel @ np.array([[c, s], [-s, c]], np.float32)
        p, q = u - (centre[0] + dx), v - (centre[1] + dy)
        # convex polygon: inside iff on the same side of every edge
        pos = neg = None
        for (x0, y0), (x1, y1) in zip(verts, np.roll(verts, -1, axis=0)):
            cr = (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0)
            pos = cr >= 0 if pos is None else pos & (cr >= 0)
            neg = cr <= 0 if neg is None else neg & (cr <= 0)
        return pos | neg, p, q
    c, s = _rot(prim.angle + dang)
    p, q = u - (prim.cx + dx), v - (prim.cy + dy)
    a = (p * c + q * s) / (prim.hw * size)
    b = (-p * s + q * c) / (prim.hh * size)
    if prim.kind == "ellipse":
        inside = a * a + b * b <= 1.0
    elif prim.kind == "rect":
        inside = (np.abs(a) <= 1.0) & (np.abs(b) <= 1.0)
    else:
        raise ValueError(prim.kind)
    return inside, p, q


def hue_rotation(degrees: float) -> np.ndarray:
    """``(3, 3)`` rotation of RGB colours by ``degrees`` about the grey axis (1, 1, 1)/√3.

    Greys (black, white) are fixed points, luminance (the RGB mean) is preserved and a rotation by
    120° permutes the channels (R→G→B); Rodrigues' formula with axis k: ``cos θ I + sin θ [k]× +
    (1 − cos θ) k kᵀ``.
    """
    th = np.deg2rad(degrees)
    k = np.full(3, 1.0 / np.sqrt(3.0))
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.cos(th) * np.eye(3) + np.sin(th) * cross + (1.0 - np.cos(th)) * np.outer(k, k)


def _draw_object(img: np.ndarray, lab: np.ndarray, cls: int, rng: np.random.Generator) -> None:
    """Draw one object of class index ``cls`` (1-based) into ``img (S,S,3)`` / ``lab (S,S)`` in place.

    Each primitive is evaluated only on the pixel box around its bounding circle.
    """
    size = img.shape[0]
    parts = OBJECT_CLASSES[TOY_CLASSES[cls]]
    side = rng.uniform(*SCALE_RANGE) * size                          # pixels per object unit
    margin = min(CENTRE_MARGIN * side, 0.5 * size - 1.0)
    cx, cy = rng.uniform(margin, size - margin, 2)
    cos_t, sin_t = _rot(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    sign = -1.0 if rng.random() < 0.5 else 1.0                        # horizontal flip
    bright = rng.uniform(*BRIGHTNESS_RANGE)
    hue = hue_rotation(rng.uniform(-HUE_ROTATION_DEG, HUE_ROTATION_DEG))
    for part in parts:
        dx, dy = rng.normal(0.0, PART_OFFSET_SIGMA, 2)
        scale = rng.uniform(*PART_SIZE_RANGE)
        dang = rng.normal(0.0, PART_ANGLE_SIGMA)
        jit = rng.normal(0.0, PART_COLOUR_SIGMA, 3)
        c1 = np.clip(hue @ ((np.asarray(part.c1) + jit) * bright), 0.0, None).astype(np.float32)
        c2 = np.clip(hue @ ((np.asarray(part.c2) + jit) * bright), 0.0, None).astype(np.float32)
        for prim in part.prims:
            pu, pv, radius = _extent(prim, dx, dy, scale)
            px = cx + side * (sign * pu * cos_t - pv * sin_t)          # object frame -> pixels
            py = cy + side * (sign * pu * sin_t + pv * cos_t)
            r = radius * side + 1.0
            x0, x1 = max(0, int(px - r)), min(size, int(np.ceil(px + r)))
            y0, y1 = max(0, int(py - r)), min(size, int(np.ceil(py + r)))
            if x1 <= x0 or y1 <= y0:
                continue
            xs = (np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx))[None, :]
            ys = (np.arange(y0, y1, dtype=np.float32) + np.float32(0.5 - cy))[:, None]
            u = (xs * np.float32(sign * cos_t / side) + ys * np.float32(sign * sin_t / side))
            v = (xs * np.float32(-sin_t / side) + ys * np.float32(cos_t / side))
            inside, p, q = _inside(prim, u, v, dx, dy, scale, dang)
            if not inside.any():
                continue
            if part.texture == "flat":
                colour = c1
            else:
                t = _texture(part, u, v, p, q, rng)
                colour = c1 + (c2 - c1) * t[..., None]
            np.copyto(img[y0:y1, x0:x1], colour, where=inside[..., None])
            np.copyto(lab[y0:y1, x0:x1], np.uint8(cls), where=inside)


def add_boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Set every pixel with a different label within ``width`` px (Chebyshev) to 255.

    Args:
        mask: ``(H, W)`` uint8 labels without 255.
        width: band reach in pixels (>= 1).

    Returns:
        A new ``(H, W)`` uint8 mask.
    """
    size = 2 * width + 1
    hi = ndimage.maximum_filter(mask, size=size, mode="nearest")
    lo = ndimage.minimum_filter(mask, size=size, mode="nearest")
    out = mask.copy()
    out[hi != lo] = IGNORE_LABEL
    return out


def render_toy_image(rng: np.random.Generator, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Render one toy image and its mask.

    Args:
        rng: the random generator (consumed); the same generator state gives identical output.
        image_size: side ``S`` in pixels.

    Returns:
        ``image`` ``(S, S, 3)`` uint8 RGB and ``mask`` ``(S, S)`` uint8 with 0 = background,
        1..6 = :data:`TOY_CLASSES` index, 255 = boundary band.
    """
    s = int(image_size)
    if s < 16:
        raise LeopartError(f"image_size: toy images must be at least 16 px, got {image_size}")
    img = _render_background(rng, s)
    lab = np.zeros((s, s), np.uint8)
    n_obj = int(rng.integers(N_OBJECTS[0], N_OBJECTS[1] + 1))
    for cls in rng.integers(1, len(TOY_CLASSES), n_obj):
        _draw_object(img, lab, int(cls), rng)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(PIXEL_NOISE_SIGMA)
    img *= np.float32(255.0)
    np.rint(img, out=img)
    np.clip(img, 0.0, 255.0, out=img)
    image = img.astype(np.uint8)
    return image, add_boundary_band(lab, boundary_width(s))


# ----------------------------------------------------------------------------------------------
# Dataset on disk
# ----------------------------------------------------------------------------------------------


def design_record(image_size: int, seed: int, counts: dict[str, int]) -> dict[str, object]:
    """The rendering settings of a generated toy dataset (written to ``design.json``)."""
    return {
        "design_version": DESIGN_VERSION, "image_size": int(image_size), "seed": int(seed), "counts": counts,
        "objects_per_image": list(N_OBJECTS), "scale_range": list(SCALE_RANGE), "centre_margin": CENTRE_MARGIN,
        "rotation_deg": ROTATION_DEG, "brightness_range": list(BRIGHTNESS_RANGE),
        "hue_rotation_deg": HUE_ROTATION_DEG,
        "part_colour_sigma": PART_COLOUR_SIGMA, "pixel_noise_sigma": PIXEL_NOISE_SIGMA,
        "stuff_types": list(STUFF_TYPES), "classes": TOY_CLASSES,
    }


def toy_name(split: str, index: int) -> str:
    """File stem of image ``index`` of ``split``, e.g. ``train_00042``."""
    return f"{split}_{index:05d}"


def generate_toy(out_dir: str | Path, n_train: int, n_val: int, image_size: int = 128,
                 seed: int = 0, progress: bool = True) -> None:
    """Write the toy dataset (layout in the module docstring) to ``out_dir`` atomically.

    The data is rendered into a temporary folder beside ``out_dir`` which is renamed into place at
    the end (an existing ``out_dir`` is replaced), so an interrupted run leaves nothing under the
    final name.

    Args:
        out_dir: destination folder.
        n_train, n_val: number of images per split (>= 1).
        image_size: side in pixels.
        seed: base seed; image ``i`` of split ``sp`` uses :func:`image_rng` ``(seed, sp, i)``.
        progress: show a tqdm bar.
    """
    for key, val in (("n_train", n_train), ("n_val", n_val)):
        if int(val) < 1:
            raise LeopartError(f"{key}: toy split size must be >= 1, got {val}")
    counts = {"train": int(n_train), "val": int(n_val)}
    with atomic_dir(out_dir) as tmp:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        (tmp / "sets").mkdir()
        bar = tqdm(total=sum(counts.values()), desc="toy images", unit="img", disable=not progress)
        for split, n in counts.items():
            names = []
            for i in range(n):
                name = toy_name(split, i)
                image, mask = render_toy_image(image_rng(seed, split, i), image_size)
                Image.fromarray(image).save(tmp / "images" / f"{name}.png", compress_level=1)
                Image.fromarray(mask).save(tmp / "masks" / f"{name}.png", compress_level=6)
                names.append(name)
                bar.update(1)
            (tmp / "sets" / f"{split}.txt").write_text("\n".join(names) + "\n")
        bar.close()
        (tmp / "classes.json").write_text(json.dumps(TOY_CLASSES, indent=2) + "\n")
        (tmp / "design.json").write_text(json.dumps(design_record(image_size, seed, counts), indent=2) + "\n")


def toy_split_index(folder: str | Path, split: str) -> SplitIndex:
    """Index of one split of a toy dataset written by :func:`generate_toy`.

    Raises:
        LeopartError: missing ``classes.json``/split list, or a listed image/mask file missing.
    """
    root = Path(folder)
    classes_file = root / "classes.json"
    if not classes_file.is_file():
        raise LeopartError(f"{root}: no toy dataset found (missing classes.json)")
    try:
        class_names = json.loads(classes_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LeopartError(f"{classes_file}: not valid JSON ({exc})") from None
    if not (isinstance(class_names, list) and all(isinstance(c, str) for c in class_names)):
        raise LeopartError(f"{classes_file}: must be a JSON list of class names")
    set_file = root / "sets" / f"{split}.txt"
    if not set_file.is_file():
        raise LeopartError(f"{set_file}: split list for split {split!r} is missing")
    names = [ln.strip() for ln in set_file.read_text().splitlines() if ln.strip()]
    if not names:
        raise LeopartError(f"{set_file}: split list is empty")
    image_paths = [root / "images" / f"{n}.png" for n in names]
    mask_paths = [root / "masks" / f"{n}.png" for n in names]
    for kind, paths in (("images", image_paths), ("masks", mask_paths)):
        present = {p.name for p in (root / kind).iterdir()} if (root / kind).is_dir() else set()
        missing = [p for p in paths if p.name not in present]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise LeopartError(f"{missing[0]}: listed in {set_file} but missing{more}")
    return SplitIndex(names=names, image_paths=image_paths, mask_paths=mask_paths,
                      class_names=class_names)

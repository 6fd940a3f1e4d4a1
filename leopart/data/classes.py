"""Class names, in label-index order (index 0 is always background).

``VOC_CLASSES`` follows the PVOC 2012 index order of spec §1.1; ``TOY_CLASSES`` the synthetic toy
set of :mod:`leopart.data.toy`. Label 255 (ignore) is not a class and is not listed.
"""

from __future__ import annotations

VOC_CLASSES: list[str] = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]

TOY_CLASSES: list[str] = ["background", "quadruped", "bird", "car", "tree", "snowman", "fish"]

IGNORE_LABEL: int = 255

assert len(VOC_CLASSES) == 21 and len(TOY_CLASSES) == 7


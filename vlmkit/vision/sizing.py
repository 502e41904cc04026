"""The size an image is given for a patch encoder: aspect ratio kept, sides multiples of the patch size.

Idefics2 paper, Finding 5 and section 3.4: the longest side is capped (980 px), the shortest raised towards a minimum
(378 px). The data pipeline resizes with this rule and the model counts an image's tokens with it, so both agree.
"""

from __future__ import annotations


def target_size(height: int, width: int, patch_size: int, max_image_size: int, min_image_size: int) -> tuple[int, int]:
    """Resized ``(height, width)``: aspect ratio kept, sides multiples of ``patch_size``.

    The longest side never exceeds ``max_image_size``; the shortest is scaled up to
    ``min_image_size`` unless that would break the maximum (extreme aspect ratios).
    """
    longest, shortest = max(height, width), min(height, width)
    scale = 1.0
    if longest * scale > max_image_size:
        scale = max_image_size / longest
    if shortest * scale < min_image_size:
        scale = min(min_image_size / shortest, max_image_size / longest)
    cap = max(patch_size, max_image_size // patch_size * patch_size)

    def snap(side: float) -> int:
        return int(min(cap, max(patch_size, round(side / patch_size) * patch_size)))

    return snap(height * scale), snap(width * scale)

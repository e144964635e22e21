""" Embedded synthetic data set

A procedurally generated image classification set that needs no download and is made deterministically
in memory, so ``python train.py`` can run the whole DRNet recipe anywhere. Every image holds one object
(a disc or a rounded square on a noisy, smoothly shaded background) filled with a texture; the texture
kind is the class. Objects come in three sizes (about 15, 26 and 48 px across on a 64 px image, each
jittered) and the texture's period scales with the object: a large object keeps its texture at half
resolution, a medium one needs three quarters, a small one full resolution, below which its texture is
averaged away. How much resolution an image needs thus varies from image to image, which is what a
resolution predictor can learn, and the object's size, visible even in a small thumbnail, tells it which.

Textures are all mean-free modulations between two random colours, and every class looks the same
under a horizontal flip and colour jitter, so timm's standard train augmentation keeps labels intact.
"""
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch.utils.data
from PIL import Image

__all__ = ['SyntheticTextures', 'SYNTHETIC_CLASSES', 'SYNTHETIC_DATA_CONFIG']

SYNTHETIC_CLASSES = (
    'hstripes', 'vstripes', 'checker', 'plaid', 'rings', 'spokes', 'hzigzag', 'vzigzag',
)

# timm data-config defaults for this set: native 64 px, no centre-crop zoom at eval, mild train crops
SYNTHETIC_DATA_CONFIG: Dict = dict(input_size=(3, 64, 64), crop_pct=1.0, interpolation='bilinear',
                                   scale=(0.7, 1.0))

_SPLIT_SEED = {'train': 0, 'validation': 1}


def _texture(kind: str, x: np.ndarray, y: np.ndarray, period: float, rng: np.random.Generator) -> np.ndarray:
    """Modulation in [-1, 1] of texture ``kind`` on coordinates centred on the object, in pixels."""
    w = 2 * math.pi / period
    p1, p2 = rng.uniform(0, 2 * math.pi, 2)
    if kind == 'hstripes':
        return np.sin(w * y + p1)
    if kind == 'vstripes':
        return np.sin(w * x + p1)
    if kind == 'checker':
        return np.sin(w * x + p1) * np.sin(w * y + p2)
    if kind == 'plaid':
        return 0.5 * (np.sin(w * x + p1) + np.sin(w * y + p2))
    if kind == 'rings':
        return np.sin(w * np.hypot(x, y) + p1)
    if kind == 'spokes':
        # as many spokes as stripes would fit around a circle at a third of the object's radius
        spokes = max(3, round(2 * math.pi * np.abs(x).max() / 3 / period))
        return np.sin(spokes * np.arctan2(y, x) + p1)
    if kind == 'hzigzag':
        return np.sin(w * (y + 0.3 * period * np.sin(w * x / 2.5)) + p1)
    if kind == 'vzigzag':
        return np.sin(w * (x + 0.3 * period * np.sin(w * y / 2.5)) + p1)
    raise ValueError(f'Unknown texture {kind!r}')


def render_image(
        label: int,
        rng: np.random.Generator,
        size: int = 64,
        object_sizes: Sequence[float] = (0.23, 0.41, 0.75),
        size_jitter: float = 0.1,
        cycles: Tuple[float, float] = (4.0, 5.5),
        noise: float = 0.06,
) -> Tuple[np.ndarray, Dict[str, float]]:
    """ One HxWx3 uint8 image of class ``label`` and its generating factors (object size, texture period).

    The object's diameter is one of ``object_sizes`` (fractions of the image side, chosen uniformly)
    times a log-uniform jitter of +-``size_jitter``; the texture repeats ``cycles`` times across it, so
    the period scales with the object.
    """
    diameter = size * object_sizes[rng.integers(len(object_sizes))] * math.exp(rng.uniform(-size_jitter, size_jitter))
    period = diameter / rng.uniform(*cycles)
    radius = diameter / 2
    cx, cy = rng.uniform(radius, size - radius, 2) if diameter < size else (size / 2, size / 2)
    angle = math.radians(rng.uniform(-12, 12))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dx, dy = xx - cx, yy - cy
    x = dx * math.cos(angle) + dy * math.sin(angle)
    y = -dx * math.sin(angle) + dy * math.cos(angle)

    if rng.random() < 0.5:  # disc
        edge = radius - np.hypot(x, y)
    else:  # rounded square
        corner = 0.3 * radius
        qx, qy = np.abs(x) - (radius - corner), np.abs(y) - (radius - corner)
        edge = corner - (np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0))
    mask = np.clip(edge + 0.5, 0, 1)[..., None]  # anti-aliased edge

    while True:  # two texture colours far enough apart to be seen
        c0, c1 = rng.uniform(0, 1, (2, 3)).astype(np.float32)
        if np.linalg.norm(c0 - c1) > 0.5:
            break
    m = _texture(SYNTHETIC_CLASSES[label], x, y, period, rng)[..., None]
    fg = c0 + (c1 - c0) * (m + 1) / 2

    b0, b1 = rng.uniform(0.1, 0.9, (2, 3)).astype(np.float32)
    g = rng.uniform(-1, 1, 2)
    ramp = ((xx - size / 2) * g[0] + (yy - size / 2) * g[1]) / size + 0.5
    bg = b0 + (b1 - b0) * np.clip(ramp, 0, 1)[..., None]

    img = mask * fg + (1 - mask) * bg + noise * rng.standard_normal((size, size, 3), dtype=np.float32)
    img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return img, dict(diameter=diameter, period=period, cx=float(cx), cy=float(cy))


class SyntheticTextures(torch.utils.data.Dataset):
    """ In-memory procedural data set of textured objects of widely varying size (see module docstring).

    Works with timm's ``create_loader`` like any timm data set: items are ``(PIL image, label)`` and the
    loader sets ``transform``. Images are made once, deterministically from ``seed`` and ``split``.

    Args:
        split: 'train' or 'validation' (disjoint random streams).
        num_samples: number of images; classes are balanced.
        img_size: image side in pixels.
        seed: base seed; the same seed and split always give the same images.
        transform: applied to each PIL image (timm's loader sets it).
    """

    def __init__(
            self,
            split: str = 'train',
            num_samples: int = 6000,
            img_size: int = 64,
            seed: int = 0,
            transform: Optional[Callable] = None,
    ):
        if split not in _SPLIT_SEED:
            raise ValueError(f"Unknown split {split!r} for the synthetic data set, use 'train' or 'validation'")
        if num_samples < 1:
            raise ValueError(f'num_samples must be >= 1, got {num_samples}')
        if img_size < 16:
            raise ValueError(f'img_size must be >= 16 px, got {img_size}')
        self.split = split
        self.transform = transform
        self.target_transform = None
        self.classes: List[str] = list(SYNTHETIC_CLASSES)
        rng = np.random.default_rng([seed, _SPLIT_SEED[split]])
        self.targets = rng.permutation(np.arange(num_samples) % len(SYNTHETIC_CLASSES))
        rendered = [render_image(int(t), rng, img_size) for t in self.targets]
        self.images = np.stack([img for img, _ in rendered])
        self.periods = np.array([f['period'] for _, f in rendered], dtype=np.float32)
        self.diameters = np.array([f['diameter'] for _, f in rendered], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.images[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])

    def filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        return f'{self.split}/{index:06d}_{self.classes[self.targets[index]]}.png'

    def filenames(self, basename: bool = False, absolute: bool = False) -> List[str]:
        return [self.filename(i) for i in range(len(self))]

""" The built-in synthetic data set: deterministic, balanced, and needing different resolutions per image. """
import numpy as np
import torch
import torch.nn.functional as F

from timm_drnet.data import SYNTHETIC_CLASSES, SyntheticTextures, create_dataset, render_image


def test_deterministic_balanced_and_split_apart():
    a = SyntheticTextures('train', num_samples=80)
    b = create_dataset('', None, 'train', is_training=True, num_samples=80)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.targets, b.targets)
    assert a.images.shape == (80, 64, 64, 3) and a.images.dtype == np.uint8
    assert np.bincount(a.targets).tolist() == [10] * len(SYNTHETIC_CLASSES)
    val = create_dataset('synthetic', None, 'validation', num_samples=80)
    assert not np.array_equal(a.images, val.images)
    img, label = a[3]
    assert img.size == (64, 64) and label == a.targets[3]


def _inner_texture_kept(img: np.ndarray, f: dict, scale: float) -> float:
    """Share of the texture's contrast inside the object that survives downsampling by ``scale`` and back."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    size = img.shape[0]
    low = F.interpolate(x, size=round(size * scale), mode='bilinear', antialias=True, align_corners=False)
    back = F.interpolate(low, size=size, mode='bilinear', align_corners=False)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    inner = torch.from_numpy(np.hypot(xx - f['cx'], yy - f['cy']) < 0.3 * f['diameter'])
    return (back[0][:, inner].std(dim=1) / x[0][:, inner].std(dim=1)).mean().item()


def test_small_objects_lose_their_texture_at_half_resolution_large_ones_keep_it():
    rng = np.random.default_rng(0)
    kept = {0: [], 2: []}
    for i in range(64):
        mode = i % 2 * 2  # smallest and largest object size
        img, f = render_image(i % len(SYNTHETIC_CLASSES), rng, object_sizes=[(0.23, 0.41, 0.75)[mode]], noise=0.0)
        assert 3.9 < f['diameter'] / f['period'] < 5.6  # the texture period scales with the object
        kept[mode].append(_inner_texture_kept(img, f, 0.5))
    assert np.mean(kept[0]) < 0.2 and np.mean(kept[2]) > 0.5, {k: np.mean(v) for k, v in kept.items()}

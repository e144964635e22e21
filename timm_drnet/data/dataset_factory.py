""" Dataset factory

timm's ``create_dataset`` (ImageFolder, tar, ``torch/``, ``hfds/`` ... data sets) plus the built-in
``synthetic`` set, which is the default when no data folder is given. Data problems a user can fix
(a missing folder, a folder without images) raise errors that say what is wrong and what to do. Folder,
tar and Hugging Face data sets (timm ``ImageDataset``) come wrapped in ``CheckedImageDataset``, so bad
image files are skipped and named, or with ``strict_data`` stop the run (see ``bad_images``).
"""
import os
from typing import Any, List, Optional

import torch.utils.data
from timm.data import ImageDataset, create_dataset as timm_create_dataset

from ..errors import literal, setting_error
from .bad_images import CheckedImageDataset
from .synthetic import SYNTHETIC_DATA_CONFIG, SyntheticTextures

__all__ = ['create_dataset', 'dataset_classes', 'is_synthetic', 'apply_synthetic_defaults', 'SYNTHETIC_NAME']

SYNTHETIC_NAME = 'synthetic'
_TRAIN_SPLITS = ('train', 'training')
_EVAL_SPLITS = ('val', 'valid', 'validation', 'eval', 'evaluation', 'test')


def create_dataset(
        name: str,
        root: Optional[str],
        split: str,
        is_training: bool = False,
        img_size: int = 64,
        num_samples: int = 6000,
        strict_data: bool = False,
        **kwargs,
) -> torch.utils.data.Dataset:
    """ Data set ``name`` (timm naming) at ``root``; with no name and no root, the built-in synthetic set.

    ``img_size`` and ``num_samples`` size the synthetic set (always the same images for the same size);
    ``kwargs`` go to timm's ``create_dataset`` (``batch_size``, ``download``, ``class_map``, ...). An
    ``ImageDataset`` is returned as a ``CheckedImageDataset``: in training a bad file is replaced by the
    next readable one (with its own label), in evaluation left out; ``strict_data`` makes it an error.
    """
    if is_synthetic(name, root):
        split_name = split.split('[')[0].lower()
        if split_name in _TRAIN_SPLITS:
            synthetic_split = 'train'
        elif split_name in _EVAL_SPLITS:
            synthetic_split = 'validation'
        else:
            raise ValueError(f"Unknown split '{split}' for the synthetic data set; use 'train' or 'validation'.")
        return SyntheticTextures(synthetic_split, num_samples=num_samples, img_size=img_size)

    if root and not os.path.exists(root):
        raise setting_error(FileNotFoundError,
                            f"Data folder '{literal(root)}' does not exist; point {{root}} at an existing folder (an "
                            f"ImageFolder layout: <root>/{literal(split)}/<class>/<image>), or leave {{root}} out to "
                            f"use the built-in synthetic data set.")
    try:
        dataset = timm_create_dataset(name, root=root, split=split, is_training=is_training, **kwargs)
    except RuntimeError as e:
        if 'Found 0 images' not in str(e):
            raise
        raise setting_error(ValueError,
                            f"No images found in '{literal(root)}' for split '{literal(split)}': expected an "
                            f"ImageFolder layout <root>/{literal(split)}/<class>/<image>.jpg (or "
                            f"<root>/<class>/<image>.jpg). Point {{root}} at a folder with images, or leave it out "
                            f"for the built-in synthetic data set.") from e
    if len(dataset) == 0:
        raise setting_error(ValueError, f"Data set '{literal(name or root)}' split '{literal(split)}' has no "
                                        f"images; check {{root}} and the split name.")
    if isinstance(dataset, ImageDataset) and not dataset.load_bytes and dataset.additional_features is None:
        dataset = CheckedImageDataset(dataset, split=split, replace_bad=is_training, strict=strict_data)
    return dataset


def dataset_classes(dataset: torch.utils.data.Dataset) -> Optional[List[str]]:
    """Class names in label order (class folders, ``classes``), or None when the data set does not say."""
    class_to_idx = getattr(getattr(dataset, 'reader', None), 'class_to_idx', None)
    if class_to_idx:
        return [name for name, _ in sorted(class_to_idx.items(), key=lambda kv: kv[1])]
    classes = getattr(dataset, 'classes', None)
    return [str(c) for c in classes] if classes else None


def is_synthetic(name: str, root: Optional[str]) -> bool:
    """True when ``name`` / ``root`` select the built-in synthetic set."""
    return name == SYNTHETIC_NAME or (not name and not root)


def apply_synthetic_defaults(args: Any) -> None:
    """Fill the synthetic set's data config (64 px, no crop zoom, ...) into ``args`` fields left unset (an
    ``img_size`` given sets the input size)."""
    for key, value in SYNTHETIC_DATA_CONFIG.items():
        if key == 'input_size' and getattr(args, 'img_size', None):
            continue
        if getattr(args, key, None) in (None, ''):
            setattr(args, key, value)

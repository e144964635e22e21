""" Calibration images for a compute budget

A budget (predictor offsets or a cascade threshold) is calibrated on a few unlabeled images, which must not be
the images it is then evaluated on. ``calibration_split`` finds them: a random sample of another split (or of
another folder), or, when there is none, a sample held out of the evaluated split.
"""
import logging
from typing import Any, Optional, Tuple

import torch.utils.data

from ..errors import literal, setting_error
from .dataset_factory import create_dataset
from .subset import LoaderSubset

__all__ = ['calibration_split']

_logger = logging.getLogger(__name__)


def calibration_split(
        dataset: torch.utils.data.Dataset,
        calib_images: int,
        name: str = '',
        root: Optional[str] = None,
        split: str = 'validation',
        calib_dir: Optional[str] = None,
        calib_split: str = 'train',
        **dataset_kwargs: Any,
) -> Tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, str]:
    """ (calibration images, images to evaluate, where the calibration images come from) for a budget.

    ``dataset`` is the evaluated ``split`` of data set ``name`` at ``root``. The calibration images are
    ``calib_images`` random images of ``calib_split`` of ``calib_dir`` (a folder without that split is taken
    whole), else of ``root``; when that has no such split, or it holds files of the evaluated split (timm falls
    back to the data folder itself), a random sample held out of ``dataset`` instead, which is then evaluated
    without it. ``dataset_kwargs`` go to ``create_dataset`` (img_size, class_map, strict_data, ...).
    """
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise ValueError('A budget calibrates on a sample of a map-style data set; this one is iterable '
                         '(tfds/, wds/, hfids/).')
    if calib_images < 1:
        raise setting_error(ValueError, f'{{calib_images}} must be >= 1, got {calib_images}.')
    generator = torch.Generator().manual_seed(0)
    why_not = None
    try:
        calib = create_dataset(name, root=calib_dir or root, split=calib_split, is_training=False,
                               num_samples=calib_images, **dataset_kwargs)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        if calib_dir:
            raise setting_error(ValueError, f'{{calib_dir}} {literal(calib_dir)}: no images to calibrate on '
                                            f'({literal(str(e).splitlines()[0])}).') from None
        calib, why_not = None, str(e).splitlines()[0]
    if calib is not None:
        pick = torch.randperm(len(calib), generator=generator)[:calib_images].sort().values.tolist()
        evaluated = set(dataset.filenames(absolute=True)) if hasattr(dataset, 'filenames') else set()
        where = f'{calib_dir} ({calib_split} split if any)' if calib_dir else f'the {calib_split} split'
        if evaluated and any(calib.filename(i, absolute=True) in evaluated for i in pick):
            if calib_dir:
                raise setting_error(ValueError, f'{{calib_dir}} {literal(calib_dir)} holds images of the evaluated '
                                                f'split {literal(repr(split))}; calibrate on other images.')
            why_not = f'it holds images of the evaluated split {split!r}'
        else:
            return LoaderSubset(calib, pick), dataset, f'{len(pick)} random images of {where}'
    if calib_images >= len(dataset):
        raise setting_error(ValueError, f'No {literal(repr(calib_split))} split to calibrate on '
                                        f'({literal(why_not)}), and the {literal(repr(split))} split has only '
                                        f'{len(dataset)} images: lower {{calib_images}} to hold some out, or name a '
                                        f'split to calibrate on with {{calib_split}}.')
    perm = torch.randperm(len(dataset), generator=generator)
    held, rest = perm[:calib_images].sort().values.tolist(), perm[calib_images:].sort().values.tolist()
    _logger.warning(f'No separate {calib_split!r} split to calibrate the budget on ({why_not}): holding '
                    f'{len(held)} random images out of the {split!r} split for it, evaluating the other '
                    f'{len(rest)}.')
    return LoaderSubset(dataset, held), LoaderSubset(dataset, rest), \
        f'{len(held)} random images held out of the {split} split (not evaluated)'


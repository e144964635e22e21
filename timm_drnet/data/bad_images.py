""" Bad image files in a data set

A folder of real photos holds the odd file that is truncated, empty or not an image at all, and valid
images in modes a model cannot take as they are (grayscale, CMYK, RGBA, palette, 16-bit). timm's
``ImageDataset`` replaces a failing sample with the next one, warning with its index only, and converts
16-bit images by clipping every value above 255 to white. Here:

* every valid image is decoded in full and converted to 8-bit RGB (16-bit values scaled by 1/257,
  alpha dropped as PIL, timm and torchvision do, palette transparency resolved first);
* a bad file never gets another file's label. In training (``replace_bad``) it is replaced by the next
  readable file in data set order *with that file's own label*, so batches keep their size (no empty
  batch, the same number of steps on every DDP rank); in evaluation it is left out of the batch, so
  every evaluated image is counted once;
* the main process names each bad file in one warning (once per run, however many epochs see it) and
  logs how many files a pass over the data skipped; with ``strict`` the first bad file is a
  ``BadImageError`` naming it.

Loader workers cannot log to the main process, so each sample carries the record of the files it had to
skip; ``SplitBadImages`` collates it apart from the images and ``BadImageMonitor``, between the
DataLoader and timm's prefetcher, reports it. ``create_loader`` wires both into timm's ``create_loader``.
"""
import logging
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Set, Tuple, Union

import numpy as np
import torch.utils.data
from PIL import Image
from timm.data import ImageDataset, create_loader as timm_create_loader
from timm.data.loader import PrefetchLoader, fast_collate

from ..errors import literal, setting_error

__all__ = ['BadImage', 'BadImageError', 'read_image', 'CheckedImageDataset', 'SplitBadImages', 'BadImageMonitor',
           'create_loader', 'skipped_files']

_logger = logging.getLogger(__name__)

_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


class BadImage(NamedTuple):
    """A file of the data set that could not be read as an image."""
    index: int
    path: str
    reason: str


class BadImageError(ValueError):
    """A data set file that is not a readable image (with ``strict_data``), or no readable image at all."""


def read_image(file: Any, mode: str = 'RGB') -> Image.Image:
    """ Decode an image file in full and convert it to ``mode`` (8 bits per channel).

    Raises whatever PIL raises for a file it cannot decode (truncated data is an error, not grey pixels).
    """
    with Image.open(file) as img:
        img.load()
        if img.mode in _SIXTEEN_BIT_MODES:
            # PIL's own conversion clips 16-bit values at 255; scale the 0..65535 range onto 0..255 instead
            values = np.asarray(img, dtype=np.float64)
            img = Image.fromarray(np.clip(np.round(values / 257.), 0, 255).astype(np.uint8), 'L')
        elif img.mode == 'P' and 'transparency' in img.info:
            img = img.convert('RGBA')  # PIL warns on converting transparent palettes straight to RGB
        return img.convert(mode)


def _reason(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ''
    return f'{type(error).__name__}: {text}' if text else type(error).__name__


class CheckedImageDataset(torch.utils.data.Dataset):
    """ A timm ``ImageDataset`` whose samples report bad files instead of failing or hiding them.

    Items are ``(image, target, bad)`` with ``bad`` the tuple of ``BadImage`` records of the files skipped
    to produce it. ``replace_bad`` (training): a bad file is replaced by the next readable one in data set
    order, with its own target. Otherwise (evaluation), and always with ``strict``, the item is
    ``(None, None, bad)`` and the collate leaves it out. ``transform`` is set by timm's ``create_loader``.
    """

    def __init__(self, dataset: ImageDataset, split: str = '', replace_bad: bool = False, strict: bool = False):
        if dataset.load_bytes or dataset.additional_features is not None:
            raise ValueError('CheckedImageDataset decodes images itself: it takes ImageDatasets without '
                             'load_bytes or additional_features')
        self.dataset = dataset
        self.split = split
        self.replace_bad = replace_bad
        self.strict = strict
        self.transform: Optional[Callable] = None
        self.target_transform = dataset.target_transform
        self.reported: Set[str] = set()  # files already named in a warning (main process)

    @property
    def reader(self) -> Any:
        return self.dataset.reader

    def __len__(self) -> int:
        return len(self.dataset)

    def filename(self, index: int, basename: bool = False, absolute: bool = False) -> str:
        return self.dataset.filename(index, basename, absolute)

    def filenames(self, basename: bool = False, absolute: bool = False) -> List[str]:
        return self.dataset.filenames(basename, absolute)

    def _read(self, index: int) -> Tuple[Image.Image, Any]:
        file, target = self.dataset.reader[index][:2]
        try:
            img = read_image(file, self.dataset.input_img_mode or 'RGB')
        finally:
            if hasattr(file, 'close'):
                file.close()
        return img, target

    def __getitem__(self, index: int) -> Tuple[Any, Any, Tuple[BadImage, ...]]:
        bad: List[BadImage] = []
        attempts = len(self) if self.replace_bad and not self.strict else 1
        for i in range(index, index + attempts):
            i %= len(self)
            try:
                img, target = self._read(i)
            except Exception as e:  # any decoder failure on one file must not end a run
                bad.append(BadImage(i, self.filename(i, absolute=True), _reason(e)))
                continue
            if self.transform is not None:
                img = self.transform(img)
            if target is None:
                target = -1
            elif self.target_transform is not None:
                target = self.target_transform(target)
            return img, target, tuple(bad)
        return None, None, tuple(bad)


class SplitBadImages:
    """ Collate for ``CheckedImageDataset`` items: ``(collate(readable items) or None, bad records)``. """

    def __init__(self, collate: Callable):
        self.collate = collate

    def __call__(self, items: List[Tuple[Any, Any, Tuple[BadImage, ...]]]) -> Tuple[Any, Tuple[BadImage, ...]]:
        bad = tuple(b for item in items for b in item[2])
        readable = [(img, target) for img, target, _ in items if img is not None]
        return (self.collate(readable) if readable else None), bad


class BadImageMonitor:
    """ Wraps a DataLoader over a ``CheckedImageDataset``: yields plain ``(images, targets)`` batches and
    reports the bad files (a warning per file, once per run; a count per pass; ``BadImageError`` if strict).

    ``skipped`` holds the records of the last complete pass. Other attributes (``sampler``, ``dataset``, ...)
    are the DataLoader's, so timm's ``PrefetchLoader`` and training loops use it as the loader itself.
    """

    def __init__(self, loader: torch.utils.data.DataLoader, dataset: CheckedImageDataset):
        """``dataset``: the ``CheckedImageDataset`` the loader's data set (it or a subset of it) reads from."""
        self.loader = loader
        self.checked = dataset
        self.skipped: List[BadImage] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__['loader'], name)

    def __iter__(self) -> Iterator[Any]:
        ds = self.checked
        split = f' ({ds.split})' if ds.split else ''
        skipped: Dict[str, BadImage] = {}  # a file skipped by several samples (replacement scans) counts once
        for batch, bad in self.loader:
            for b in bad:
                if ds.strict:
                    raise setting_error(BadImageError, f'Unreadable image file {literal(b.path)}{literal(split)}: '
                                                       f'{literal(b.reason)}. Remove or replace it, or drop '
                                                       f'{{strict_data}} to skip bad files with a warning.')
                if b.path not in ds.reported:
                    ds.reported.add(b.path)
                    _logger.warning(f'Skipping unreadable image file {b.path}{split}: {b.reason}')
            skipped.update((b.path, b) for b in bad)
            if batch is None:
                if ds.replace_bad:
                    raise BadImageError(f'No readable image in the data set{split}: every file failed to load, '
                                        f'e.g. {bad[0].path} ({bad[0].reason}).')
                continue
            yield batch
        self.skipped = list(skipped.values())
        if skipped:
            how = 'each replaced by the next readable file, with its own label' if ds.replace_bad else \
                'left out of the evaluation'
            _logger.warning(f'{len(skipped)} unreadable image file(s) skipped in this pass over '
                            f'{len(self.loader.dataset)} files{split}, {how}.')


def create_loader(dataset: torch.utils.data.Dataset, **kwargs) -> Union[torch.utils.data.DataLoader, PrefetchLoader]:
    """ timm's ``create_loader``; for a ``CheckedImageDataset`` (or a subset of one) with bad files collated out
    and reported.

    Takes timm's arguments. The monitor sits under timm's ``PrefetchLoader`` (which expects 2-tuples).
    """
    checked = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    if not isinstance(checked, CheckedImageDataset):
        return timm_create_loader(dataset, **kwargs)
    use_prefetcher = kwargs.get('use_prefetcher', True)
    collate = kwargs.pop('collate_fn', None) or (fast_collate if use_prefetcher else torch.utils.data.default_collate)
    loader = timm_create_loader(dataset, collate_fn=SplitBadImages(collate), **kwargs)
    if isinstance(loader, PrefetchLoader):
        loader.loader = BadImageMonitor(loader.loader, checked)
        return loader
    return BadImageMonitor(loader, checked)


def skipped_files(loader: Any) -> List[BadImage]:
    """The bad files the last complete pass of a ``create_loader`` loader skipped (none for other loaders)."""
    monitor = loader.loader if isinstance(loader, PrefetchLoader) else loader
    return list(monitor.skipped) if isinstance(monitor, BadImageMonitor) else []

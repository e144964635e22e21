""" Subsets for timm's loader

``timm.data.create_loader`` installs its transform by assigning ``dataset.transform``; on a plain
``torch.utils.data.Subset`` that assignment would never reach the images. ``LoaderSubset`` forwards it to
the data set it selects from, so a split of one data set (e.g. calibration images held out of the
evaluation set) loads like the data set itself.
"""
from typing import Callable, Optional

import torch.utils.data

__all__ = ['LoaderSubset']


class LoaderSubset(torch.utils.data.Subset):
    """ ``Subset`` whose ``transform`` is that of the data set it selects from.

    Subsets of one data set share its transform, so give their loaders the same preprocessing.
    """

    @property
    def transform(self) -> Optional[Callable]:
        return self.dataset.transform

    @transform.setter
    def transform(self, value: Optional[Callable]) -> None:
        self.dataset.transform = value

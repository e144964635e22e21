""" Eval transforms that make each image at the size its route needs

A full-size DRNet resizes each routed image from the full-size crop inside the model (or graph). A data pipeline
can make the image at any size in the resize it does anyway, so a ``prepared`` ONNX export
(``export_onnx(prepared=True)``) takes each graph's input at its own size: the predictor's small image first, then,
once routed, the image at its route's size, each in one resize from the decoded image.
"""
from typing import Any, Callable, Dict, List, Sequence, Tuple

from timm.data import create_transform

__all__ = ['candidate_transforms']


def candidate_transforms(data_config: Dict[str, Any], sizes: Sequence[Tuple[int, int]],
                         resized_interpolation: str = 'bilinear') -> List[Callable]:
    """ timm eval transforms making images at each of ``sizes`` (H, W) with ``data_config``'s crop (``crop_pct``,
    ``crop_mode``) and normalisation: the field of view of the full-size crop at every size.

    ``data_config`` is a timm data config, as ``timm.data.resolve_data_config`` returns. Its own size keeps its
    interpolation; every other size is made with ``resized_interpolation``, by default PIL's antialiased bilinear
    filter, the one DRNet resizes its full-size crop with in training and in a full-size export.
    """
    if 'input_size' not in data_config:
        raise ValueError(f'data_config needs an input_size (C, H, W), got keys {sorted(data_config)}')
    channels, *full = data_config['input_size']
    return [create_transform(**{**data_config, 'input_size': (channels, *size),
                                'interpolation': data_config.get('interpolation', 'bilinear')
                                if tuple(size) == tuple(full) else resized_interpolation}, is_training=False)
            for size in sizes]

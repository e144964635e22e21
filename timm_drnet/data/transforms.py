""" Eval transforms that make each image at the size its route needs

A full-size DRNet resizes each routed image from the full-size crop inside the model (or graph). A data pipeline
can make the image at any size in the resize it does anyway, so a ``prepared`` ONNX export
(``export_onnx(prepared=True)``) takes each graph's input at its own size: the predictor's small image first, then,
once routed, the image at its route's size, each in one resize from the decoded image.
"""
from typing import Any, Callable, Dict, List, Sequence, Tuple

from timm.data import create_transform

__all__ = ['candidate_transforms']


def candidate_transforms(data_config: Dict[str, Any], sizes: Sequence[Tuple[int, int]]) -> List[Callable]:
    """ timm eval transforms making images at each of ``sizes`` (H, W) with ``data_config``'s crop (``crop_pct``,
    ``crop_mode``), interpolation and normalisation: the field of view of the full-size crop at every size.
    ``data_config`` is a timm data config, as ``timm.data.resolve_data_config`` returns."""
    if 'input_size' not in data_config:
        raise ValueError(f'data_config needs an input_size (C, H, W), got keys {sorted(data_config)}')
    channels = data_config['input_size'][0]
    return [create_transform(**{**data_config, 'input_size': (channels, *size)}, is_training=False)
            for size in sizes]

""" Command-line flags that train.py and validate.py share

Each ``add_*_args`` adds one group of flags, with timm's names and behaviour, to a script's parser; the scripts
add their own on top. ``error_message`` renders a library error in the parser's flag names, and
``given_settings`` says which settings a command line (and its config file) set explicitly.
"""
import argparse
import copy
from typing import Dict, Iterable, Optional, Sequence, Set

import torch
from timm.utils import ParseKwargs, add_bool_arg

from .config import DEFAULT_MODEL, DEFAULT_MODEL_KWARGS
from .data import SYNTHETIC_NAME
from .errors import in_terms
from .layers import PREDICTORS

__all__ = ['add_data_args', 'add_model_args', 'add_runtime_args', 'add_cost_args', 'error_message',
           'flag_names', 'given_settings']

# Python names the library's errors use that are not a flag's own destination
_ALIASES = {'root': '--data-dir', 'temperature': '--target-temperature', 'cost_weight': '--target-cost-weight',
            'tau': '--gumbel-tau', 'tau_end': '--gumbel-tau-end', 'decay': '--gumbel-tau-decay'}


def add_data_args(parser: argparse.ArgumentParser, synthetic_samples: Sequence[int]) -> argparse._ArgumentGroup:
    """Data set flags; ``synthetic_samples`` the default sizes of the built-in set's splits (one value per split)."""
    group = parser.add_argument_group('Dataset parameters')
    group.add_argument('--data-dir', metavar='DIR', default=None,
                       help='path to dataset root (default: none, the built-in synthetic data set)')
    group.add_argument('--dataset', metavar='NAME', default='',
                       help='dataset type + name ("<type>/<name>"), as timm; empty = ImageFolder/ImageTar, '
                            f'"{SYNTHETIC_NAME}" = the built-in set (the default without --data-dir)')
    group.add_argument('--dataset-download', action='store_true', default=False,
                       help='allow download of dataset for torch/ and tfds/ datasets that support it')
    group.add_argument('--class-map', default='', type=str, metavar='FILENAME',
                       help='path to class to idx mapping file (default: "")')
    nargs = len(synthetic_samples)
    group.add_argument('--synthetic-samples', type=int, nargs=None if nargs == 1 else nargs,
                       default=synthetic_samples[0] if nargs == 1 else tuple(synthetic_samples),
                       metavar='N' if nargs == 1 else ('TRAIN', 'VAL'),
                       help=f'images in the synthetic set (default: {" ".join(map(str, synthetic_samples))})')
    group.add_argument('--strict-data', action='store_true', default=False,
                       help='stop at the first unreadable image file, naming it (default: skip bad files with a '
                            'warning each: replaced by the next readable file in training, left out in evaluation)')
    return group


def add_model_args(parser: argparse.ArgumentParser, batch_size: int) -> argparse._ArgumentGroup:
    """Model, weights and input flags; ``batch_size`` the default of ``-b``."""
    group = parser.add_argument_group('Model parameters')
    group.add_argument('--model', default=None, type=str, metavar='MODEL',
                       help=f'DRNet model name (default: the checkpoint\'s, else "{DEFAULT_MODEL}")')
    group.add_argument('--model-kwargs', nargs='*', default=None, action=ParseKwargs,
                       help='create_model keyword arguments, e.g. backbone=resnet18 (default: the checkpoint\'s, '
                            'else ' + ' '.join(f'{k}={v}' for k, v in DEFAULT_MODEL_KWARGS.items()) +
                            f' for --model {DEFAULT_MODEL})')
    add_bool_arg(group, 'pretrained', default=False,
                 help='start from pretrained weights: the backbone\'s timm weights, copied into every BN branch, '
                      'unless the model names DRNet weights of its own (default: off)')
    group.add_argument('--pretrained-path', default=None, type=str,
                       help='load these weights (a backbone or DRNet file) instead of the hub\'s with --pretrained')
    group.add_argument('--num-classes', type=int, default=None, metavar='N',
                       help='number of label classes (default: the checkpoint\'s, else the data set\'s)')
    group.add_argument('--resolutions', type=float, nargs='+', default=None, metavar='SCALE',
                       help='candidate scales of the input size, largest first (default: the model\'s, 1 0.75 0.5)')
    group.add_argument('--predictor', default=None, choices=sorted(PREDICTORS),
                       help='resolution predictor design: resnet (the paper\'s), mobile, backbone (a copy of the '
                            'backbone\'s first three feature stages with its --pretrained weights) or stem (of its '
                            'first feature stage: fewest layers, for batch-1 CPU serving) (default: the model\'s)')
    group.add_argument('--predictor-size', type=int, default=None, metavar='N',
                       help='side of the image the predictor sees (default: the model\'s)')
    group.add_argument('--img-size', type=int, default=None, metavar='N', help='image size (default: None => model)')
    group.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N',
                       help='input dimensions (d h w, e.g. --input-size 3 224 224) (default: the checkpoint\'s, '
                            'else the model\'s training size, not timm\'s test size: the branches were trained there)')
    group.add_argument('--crop-pct', default=None, type=float, metavar='N', help='input image center crop percent')
    group.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN',
                       help='override mean pixel value of dataset')
    group.add_argument('--std', type=float, nargs='+', default=None, metavar='STD', help='override std deviation')
    group.add_argument('--interpolation', default='', type=str, metavar='NAME',
                       help='image resize interpolation type (overrides model)')
    group.add_argument('-b', '--batch-size', type=int, default=batch_size, metavar='N',
                       help=f'input batch size, per process (default: {batch_size})')
    return group


def add_runtime_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Device, precision and data loading flags."""
    group = parser.add_argument_group('Runtime parameters')
    group.add_argument('-j', '--workers', type=int, default=2, metavar='N', help='data loading processes (default: 2)')
    group.add_argument('--amp', action='store_true', default=False, help='mixed precision (GPU only)')
    group.add_argument('--amp-dtype', default='float16', choices=('float16', 'bfloat16'), help='AMP dtype')
    group.add_argument('--pin-mem', action='store_true', default=False, help='pin CPU memory in DataLoader')
    group.add_argument('--no-prefetcher', action='store_true', default=False, help='disable fast prefetcher')
    group.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', type=str,
                       help='device (default: cuda if available, else cpu)')
    return group


def add_cost_args(parser: argparse.ArgumentParser, cost_help: str) -> argparse._ArgumentGroup:
    """``--cost`` (counted GMACs or measured latency) and how a latency table is measured."""
    group = parser.add_argument_group('Cost parameters')
    group.add_argument('--cost', default=None, choices=('macs', 'latency'), help=cost_help)
    group.add_argument('--latency-batch-size', type=int, default=1, metavar='N',
                       help='batch size the latency table is measured at (--cost latency; default: 1)')
    group.add_argument('--latency-repeats', type=int, default=20, metavar='N',
                       help='timed runs per entry of the latency table, the median is kept (default: 20)')
    return group


def flag_names(parser: argparse.ArgumentParser) -> Dict[str, str]:
    """Setting name -> the flag that sets it (its long option), for every flag of ``parser`` and the aliases."""
    names = dict(_ALIASES)
    for action in parser._actions:
        own = f'--{action.dest.replace("_", "-")}'
        longs = [o for o in action.option_strings if o.startswith('--')]
        if own in action.option_strings:  # the flag named after the setting (not its --no- twin)
            names[action.dest] = own
        elif longs and action.dest not in names:
            names[action.dest] = max(longs, key=len)
    return names


def error_message(error: BaseException, parser: argparse.ArgumentParser) -> str:
    """The message of a library error, with the settings it names written as the parser's flags."""
    return in_terms(error, flag_names(parser))


def given_settings(parser: argparse.ArgumentParser, argv: Optional[Iterable[str]],
                   config: Iterable[str] = ()) -> Set[str]:
    """ The settings (destinations) ``argv`` gives explicitly, plus those of a config file (``config``).

    Parses ``argv`` once more with every default suppressed, so a flag given with its default value counts too.
    """
    bare = copy.deepcopy(parser)
    for action in bare._actions:
        action.default = argparse.SUPPRESS
    bare.set_defaults(**{})
    bare._defaults.clear()
    given, _ = bare.parse_known_args(list(argv) if argv is not None else None)
    return set(vars(given)) | set(config)

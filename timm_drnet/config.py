""" Run configuration

How ``train.py`` and ``validate.py`` decide which DRNet to build and how to feed it: settings given by the
caller win, then the DRNet config stored in the checkpoint being loaded (so a stage-1 checkpoint or a trained
model needs no repeated settings), then the defaults. ``drnet_config`` is what a checkpoint stores: the model
name, the ``create_model`` keyword arguments, the settings that must match for its weights to load
(resolutions, classes, input size), the data config it was trained with (size, crop, interpolation, mean,
std), and any measured cost table, which is not part of the state dict.
"""
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from timm.data import resolve_data_config
from timm.models import create_model, is_model, parse_model_name, split_model_name_tag

from .checkpoint import load_checkpoint_weights, load_training_checkpoint
from .costs import CostTable, measure_cost_table
from .drnet import DRNet
from .errors import literal, setting_error
from .models import DRNET_BACKBONES
from .routing import MIN_INPUT_SIZE, check_resolutions

__all__ = ['DEFAULT_MODEL', 'DEFAULT_MODEL_KWARGS', 'DATA_CONFIG_KEYS', 'drnet_config', 'saved_cost_tables',
           'install_costs', 'resolve_model_args', 'build_drnet', 'load_drnet', 'run_data_config', 'check_input_size']

_logger = logging.getLogger(__name__)

# The scripts' default model: a small DRNet sized for the built-in 64 px synthetic set on a CPU. timm's
# tiny test_resnet with output stride 16 keeps a 2x2 final feature map at the smallest candidate (32 px).
DEFAULT_MODEL = 'drnet'
DEFAULT_MODEL_KWARGS: Dict[str, Any] = dict(backbone='test_resnet', output_stride=16, predictor='mobile',
                                            predictor_size=32)

# the data config a model is trained with and must be evaluated with (timm resolve_data_config keys)
DATA_CONFIG_KEYS = ('input_size', 'interpolation', 'crop_pct', 'crop_mode', 'mean', 'std')


def drnet_config(model: DRNet, model_name: str, model_kwargs: Dict[str, Any], input_size: Sequence[int],
                 data_config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The settings a checkpoint belongs to: enough to rebuild the model, check that weights fit it, and feed it."""
    cfg = dict(model=model_name, model_kwargs=dict(model_kwargs), **model.drnet_args(), num_classes=model.num_classes,
               in_chans=model.in_chans, input_size=list(input_size))
    if data_config:
        cfg['data_config'] = {k: list(v) if isinstance(v, tuple) else v
                              for k, v in data_config.items() if k in DATA_CONFIG_KEYS}
    return cfg


def saved_cost_tables(cfg: Optional[Dict[str, Any]]) -> List[CostTable]:
    """The measured cost tables a ``drnet_config`` (or config.json ``model_args``) carries; none for MACs."""
    return [CostTable.from_dict(d) for d in (cfg or {}).get('cost_tables') or ()]


def install_costs(
        model: DRNet,
        cost: Optional[str],
        input_size: Sequence[int],
        saved_cfg: Optional[Dict[str, Any]] = None,
        source: str = '',
        measure: Optional[Callable[[], CostTable]] = None,
) -> str:
    """ Set the model's costs; returns what they are ('macs' or 'latency').

    ``cost`` None: the measured tables saved in ``saved_cfg`` (the config of the checkpoint read from ``source``)
    if it holds any, else the model's own; 'macs': counted GMACs; 'latency': ``measure()`` (default: the latency
    per image measured on the model's device at batch 1, ``measure_cost_table``). Raises ValueError when the
    costs in use hold no table for ``input_size``.
    """
    input_size = tuple(input_size)
    if cost == 'latency':
        table = measure() if measure is not None else measure_cost_table(model, input_size)
        model.set_cost_table(table)
        _logger.info(f'Costs: latency measured on this device: {table.describe(model.resolutions)}.')
    elif cost == 'macs':
        model.reset_costs()
    elif cost is not None:
        raise setting_error(ValueError, f"{{cost}} must be 'macs' or 'latency', got {cost!r}")
    else:
        tables = saved_cost_tables(saved_cfg)
        for table in tables:
            model.set_cost_table(table)
        if tables:
            _logger.info(f'Costs: the latency table saved in {source} '
                         f'({tables[0].describe(model.resolutions)}).')
    try:
        model.cost_table(input_size)
    except KeyError:
        where = literal(source or 'installed')
        raise setting_error(ValueError, f'The model\'s {model.cost_unit} cost tables ({where}) '
                                        f'do not cover input size {list(input_size)}: set {{cost}} latency to measure '
                                        f'one at this size, or {{cost}} macs.') from None
    return 'macs' if model.cost_unit == 'gmacs' else 'latency'


def resolve_model_args(
        model: Optional[str],
        model_kwargs: Optional[Dict[str, Any]],
        settings: Dict[str, Any],
        ckpt_cfg: Optional[Dict[str, Any]] = None,
        num_classes: Optional[int] = None,
) -> Tuple[str, Dict[str, Any]]:
    """ Model name and ``create_model`` kwargs.

    Args:
        model: model name (None: the checkpoint's, else ``DEFAULT_MODEL``).
        model_kwargs: ``create_model`` kwargs (None: the checkpoint's for the same model, else the defaults).
        settings: single settings (resolutions, predictor, predictor_size, num_classes, ...); None = not given.
        ckpt_cfg: the ``drnet_config`` stored in the checkpoint to be loaded, if any.
        num_classes: the data set's class count, used when neither settings nor checkpoint say.
    """
    name = model or (ckpt_cfg['model'] if ckpt_cfg else DEFAULT_MODEL)
    if ckpt_cfg and ckpt_cfg['model'] == name:
        kwargs = dict(ckpt_cfg.get('model_kwargs') or {}, num_classes=ckpt_cfg['num_classes'])
    elif model_kwargs is None and name == DEFAULT_MODEL:
        kwargs = dict(DEFAULT_MODEL_KWARGS)
    else:
        kwargs = {}
    kwargs.update(model_kwargs or {})
    kwargs.update({k: v for k, v in settings.items() if v is not None})
    if kwargs.get('num_classes') is None:
        if num_classes is None:
            raise setting_error(ValueError, 'The data set does not say how many classes it has; set {num_classes}.')
        kwargs['num_classes'] = num_classes
    prefix, arch = parse_model_name(name)
    if not prefix and not is_model(split_model_name_tag(arch)[0]):
        models = ', '.join(sorted(['drnet', *DRNET_BACKBONES]))
        raise setting_error(ValueError, f"Unknown model '{name}'. DRNet models: {models} (wrap any timm backbone "
                                        f"with {{model}} drnet {{model_kwargs}} backbone=NAME).")
    if kwargs.get('resolutions') is not None:
        kwargs['resolutions'] = list(check_resolutions(kwargs['resolutions']))
    return name, kwargs


def build_drnet(
        name: str,
        kwargs: Dict[str, Any],
        pretrained: bool = False,
        pretrained_path: Optional[str] = None,
) -> DRNet:
    """``timm.create_model`` of a DRNet, with errors that name the setting to fix."""
    overlay = dict(file=pretrained_path) if pretrained_path else None
    try:
        model = create_model(name, pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs)
    except TypeError as e:
        raise ValueError(f"Model '{name}' does not take the settings {kwargs}: {e}") from e
    if not isinstance(model, DRNet):
        raise setting_error(ValueError, f"'{name}' is a plain timm model, not a DRNet; wrap it with {{model}} drnet "
                                        f"{{model_kwargs}} backbone={name}.")
    return model


def load_drnet(path: str, use_ema: bool = False) -> DRNet:
    """ The DRNet a ``train.py`` checkpoint (a file with its DRNet config) or an exported folder (``local-dir``)
    holds, in eval mode."""
    if Path(path).is_dir():
        return create_model(f'local-dir:{path}', pretrained=True).eval()
    ckpt = load_training_checkpoint(path)
    cfg = ckpt.get('drnet')
    if not cfg:
        raise setting_error(ValueError, f'{literal(path)} holds no DRNet config (not a train.py checkpoint): '
                                        f'name a train.py checkpoint or an exported model folder.')
    name, kwargs = resolve_model_args(None, None, {}, cfg)
    model = build_drnet(name, kwargs)
    load_checkpoint_weights(model, ckpt, path, use_ema=use_ema)
    return model.eval()


def run_data_config(settings: Dict[str, Any], model: DRNet, saved_cfg: Optional[Dict[str, Any]] = None,
                    verbose: bool = False) -> Dict[str, Any]:
    """ timm's ``resolve_data_config`` for a run: the caller's ``settings`` (input_size, crop_pct, interpolation,
    mean, std, ...) win, then the data config saved with the checkpoint the model was trained with (``saved_cfg``,
    a ``drnet_config``), then the model's pretrained cfg at its training size (never timm's test size: the
    resolution branches were trained at the training size and its candidates)."""
    cfg = dict(getattr(model, 'pretrained_cfg', None) or {})
    if saved_cfg:
        saved = saved_cfg.get('data_config') or dict(input_size=saved_cfg['input_size'])
        cfg.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    return resolve_data_config(settings, pretrained_cfg=cfg, use_test_size=False, verbose=verbose)


def check_input_size(model: DRNet, input_size: Sequence[int]) -> None:
    """Every candidate must keep at least ``MIN_INPUT_SIZE`` pixels a side at this input size."""
    smallest = min(model.candidate_sizes(*input_size[1:])[-1])
    if smallest < MIN_INPUT_SIZE:
        raise setting_error(
            ValueError,
            f'Resolutions {" ".join(f"{r:g}" for r in model.resolutions)} at input size {input_size[-1]} px give '
            f'a smallest candidate of {smallest} px, below the {MIN_INPUT_SIZE} px minimum; use larger '
            f'{{resolutions}} or a larger {{input_size}}.')

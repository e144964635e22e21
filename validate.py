#!/usr/bin/env python3
""" DRNet Validation Script

Evaluates a trained DRNet the way timm's validate.py evaluates timm models, and reports what matters for a
dynamic-resolution model: top-1 / top-5, average GMACs per image with the predictor, the share of images
at each resolution and the accuracy per chosen resolution. With flags, also:

* ``--static``: every candidate resolution alone (the backbone for every image at that resolution);
* ``--random``: a random router with the DRNet's own resolution shares (mean and std over 3 seeds, the
  paper's Table 5);
* ``--oracle``: each image at the smallest resolution that classifies it correctly;
* ``--plot DIR``: the accuracy-vs-GMACs chart of all of these, and a grid of example images per chosen
  resolution (the paper's Figure 4);
* ``--results-file``: everything as JSON;
* ``--target-gmacs X`` / ``--target-ms X``: a compute budget set without retraining (``DRNet.set_budget``),
  calibrated on ``--calib-images`` unlabeled images of the train split (else held out of the evaluated
  split), then evaluated; the report states the target, the cost on the calibration images and the cost
  reached on the evaluated ones; ``--calib-labels`` also uses their labels to pick the resolution offsets
  that classify the most of them correctly within the budget; ``--calib-dir`` takes the calibration images from
  another folder;
* ``--cascade`` with a target (or ``--cascade-threshold``): route by confidence cascade instead of the
  predictor (``DRNet.set_cascade_budget``): each image moves up from the smallest resolution while the
  backbone is unsure of it;
* ``--cost latency``: costs in ms measured on this device instead of counted GMACs (a checkpoint trained
  with ``train.py --cost latency`` brings its own table).

Random routing and the oracle come from one pass per resolution, no extra model runs. With no
``--data-dir`` the built-in synthetic validation set is used. The model settings come from the checkpoint
(``--checkpoint``) unless given:

    python validate.py --checkpoint output/train/<experiment>/drnet/last.pth.tar --static --random --oracle
    python validate.py --data-dir ../shared/data/imagenette224 --checkpoint <ckpt> --plot output/plots
"""
import argparse
import json
import logging
import sys
import time
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from timm.data import resolve_data_config
from timm.utils import ParseKwargs, setup_default_logging

import timm_drnet
from timm_drnet.checkpoint import load_checkpoint_weights, load_training_checkpoint
from timm_drnet.config import (
    DEFAULT_MODEL, DEFAULT_MODEL_KWARGS, build_drnet, check_input_size, install_saved_cost_tables, resolve_model_args,
)
from timm_drnet.data import (
    SYNTHETIC_NAME, LoaderSubset, apply_synthetic_defaults, create_dataset, create_loader, dataset_classes,
    is_synthetic, skipped_files,
)
from timm_drnet.costs import unit_label
from timm_drnet.evaluate import Example, collect_predictions, format_table, summarize

_logger = logging.getLogger('validate')

parser = argparse.ArgumentParser(description='DRNet validation (timm-style)')
parser.add_argument('--data-dir', metavar='DIR', default=None,
                    help='path to dataset root (default: none, the built-in synthetic data set)')
parser.add_argument('--dataset', metavar='NAME', default='',
                    help='dataset type + name ("<type>/<name>"), as timm; empty = ImageFolder/ImageTar, '
                         f'"{SYNTHETIC_NAME}" = the built-in set (the default without --data-dir)')
parser.add_argument('--split', metavar='NAME', default='validation', help='dataset split (default: validation)')
parser.add_argument('--dataset-download', action='store_true', default=False,
                    help='allow download of dataset for torch/ and tfds/ datasets that support it')
parser.add_argument('--class-map', default='', type=str, metavar='FILENAME', help='path to class to idx mapping file')
parser.add_argument('--synthetic-samples', type=int, default=2000, metavar='N',
                    help='images in the synthetic validation set (default: 2000)')
parser.add_argument('--strict-data', action='store_true', default=False,
                    help='stop at the first unreadable image file, naming it (default: leave bad files out of the '
                         'evaluation with a warning each)')
parser.add_argument('--model', default=None, type=str, metavar='MODEL',
                    help=f'DRNet model name (default: the checkpoint\'s, else "{DEFAULT_MODEL}")')
parser.add_argument('--model-kwargs', nargs='*', default=None, action=ParseKwargs,
                    help='create_model keyword arguments (default: the checkpoint\'s, else ' +
                         ' '.join(f'{k}={v}' for k, v in DEFAULT_MODEL_KWARGS.items()) + ')')
parser.add_argument('--checkpoint', default='', type=str, metavar='PATH',
                    help='weights: a train.py checkpoint, a state dict or a .safetensors file')
parser.add_argument('--use-ema', action='store_true', default=False, help='use the checkpoint\'s EMA weights')
parser.add_argument('--pretrained', action='store_true', default=False, help='use pretrained weights')
parser.add_argument('--pretrained-path', default=None, type=str, help='load these weights with --pretrained')
parser.add_argument('--num-classes', type=int, default=None, help='number of classes (default: the checkpoint\'s)')
parser.add_argument('--resolutions', type=float, nargs='+', default=None, metavar='SCALE',
                    help='candidate scales of the input size (default: the checkpoint\'s / model\'s)')
parser.add_argument('--predictor', default=None, choices=('resnet', 'mobile'), help='predictor design')
parser.add_argument('--predictor-size', type=int, default=None, metavar='N', help='predictor input side')
parser.add_argument('--img-size', default=None, type=int, metavar='N', help='input image dimension')
parser.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N',
                    help='input dimensions (d h w, e.g. --input-size 3 224 224), uses model default if empty')
parser.add_argument('--crop-pct', default=None, type=float, metavar='N', help='input image center crop pct')
parser.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN', help='override mean pixel value')
parser.add_argument('--std', type=float, nargs='+', default=None, metavar='STD', help='override std deviation')
parser.add_argument('--interpolation', default='', type=str, metavar='NAME', help='image resize interpolation type')
parser.add_argument('-b', '--batch-size', default=128, type=int, metavar='N', help='mini-batch size (default: 128)')
parser.add_argument('-j', '--workers', default=2, type=int, metavar='N', help='data loading processes (default: 2)')
parser.add_argument('--amp', action='store_true', default=False, help='mixed precision (GPU only)')
parser.add_argument('--amp-dtype', default='float16', choices=('float16', 'bfloat16'), help='AMP dtype')
parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', type=str,
                    help='device (default: cuda if available, else cpu)')
parser.add_argument('--no-prefetcher', action='store_true', default=False, help='disable fast prefetcher')
parser.add_argument('--pin-mem', action='store_true', default=False, help='pin CPU memory in DataLoader')
parser.add_argument('--log-freq', default=10, type=int, metavar='N', help='batch logging frequency')
parser.add_argument('--static', action='store_true', default=False, help='also evaluate each resolution alone')
parser.add_argument('--random', action='store_true', default=False,
                    help='also a random router with the DRNet\'s resolution shares (implies --static)')
parser.add_argument('--random-seeds', type=int, default=3, metavar='N', help='random router seeds (default: 3)')
parser.add_argument('--oracle', action='store_true', default=False,
                    help='also the oracle: smallest correct resolution per image (implies --static)')
parser.add_argument('--plot', default='', type=str, metavar='DIR',
                    help='write accuracy_vs_gmacs.png and examples.png to DIR (implies --static --random --oracle)')
parser.add_argument('--plot-examples', type=int, default=8, metavar='N', help='example images per resolution')
parser.add_argument('--results-file', default='', type=str, metavar='FILENAME', help='write the results as JSON')
parser.add_argument('--cost', default=None, choices=('macs', 'latency'),
                    help='costs in counted GMACs, or in ms measured on this device (default: the latency table saved '
                         'with the checkpoint, if any, else GMACs)')
parser.add_argument('--latency-batch-size', type=int, default=1, metavar='N',
                    help='batch size the latency table is measured at (--cost latency; default: 1)')
parser.add_argument('--latency-repeats', type=int, default=20, metavar='N',
                    help='timed runs per entry of the latency table, the median is kept (default: 20)')
budget = parser.add_mutually_exclusive_group()
budget.add_argument('--target-gmacs', type=float, default=None, metavar='GMACS',
                    help='evaluate at this mean GMACs per image (predictor included), set by calibrating the '
                         'predictor\'s resolution offsets on unlabeled images (DRNet.set_budget), no retraining')
budget.add_argument('--target-ms', type=float, default=None, metavar='MS',
                    help='the same for a latency budget in ms per image (needs latency costs: --cost latency or a '
                         'checkpoint trained with them)')
parser.add_argument('--calib-images', type=int, default=256, metavar='N',
                    help='unlabeled images the budget is calibrated on (default: 256)')
parser.add_argument('--calib-dir', default=None, metavar='DIR',
                    help='data set root the calibration images come from (default: --data-dir); e.g. a folder of '
                         'images the model was not trained on, whose confidences match those of new images')
parser.add_argument('--calib-split', default='train', metavar='NAME',
                    help='split the calibration images are drawn from at random (default: train); without it, they '
                         'are held out of the evaluated split')
parser.add_argument('--calib-labels', action='store_true',
                    help='calibrate the budget with the calibration images\' labels too: per-resolution offsets that '
                         'classify the most of them correctly within the budget (DRNet.set_budget(labeled=True); '
                         'runs the backbone at every resolution on them)')
parser.add_argument('--cascade', action='store_true',
                    help='route by confidence cascade instead of the predictor: each image runs at the smallest '
                         'level first and moves up while its top class probability is below a threshold, which '
                         '--target-gmacs / --target-ms calibrate on unlabeled images (DRNet.set_cascade_budget) or '
                         '--cascade-threshold sets; no trained predictor needed')
parser.add_argument('--cascade-threshold', type=float, default=None, metavar='P',
                    help='cascade stopping probability (implies --cascade)')
parser.add_argument('--cascade-levels', type=int, nargs='+', default=None, metavar='J',
                    help='candidate indices the cascade runs, in order (0 = largest; default: every candidate, '
                         'smallest first; implies --cascade)')


def plot_accuracy_vs_cost(summary: Dict[str, Any], path: Path) -> None:
    """Top-1 against cost per image: static resolutions (a curve), random router, DRNet, oracle."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    unit = unit_label(summary['cost_unit'])
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    static = summary['static']
    ax.plot([s['cost'] for s in static], [s['top1'] for s in static], 'o-', color='tab:gray', label='static')
    for s in static:
        ax.annotate(f'{s["resolution"]:g}x ({s["size"][0]} px)', (s['cost'], s['top1']), textcoords='offset points',
                    xytext=(4, -12), fontsize=8, color='tab:gray')
    rnd = summary['random']
    ax.errorbar([rnd['cost']], [rnd['top1_mean']], yerr=[rnd['top1_std']], fmt='s', color='tab:orange',
                capsize=4, label=f'random, DRNet shares ({len(rnd["seeds"])} seeds)')
    ax.plot([summary['drnet']['cost']], [summary['drnet']['top1']], '*', color='tab:red', markersize=15,
            label='DRNet (predictor included)')
    ax.plot([summary['oracle']['cost']], [summary['oracle']['top1']], 'D', color='tab:green', label='oracle')
    ax.set_xlabel(f'{unit} per image')
    ax.set_ylabel('top-1 accuracy (%)')
    ax.set_title(f'DRNet on {summary["num_images"]} images, input {summary["input_size"][-1]} px')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_examples(
        examples: Dict[int, List[Example]],
        resolutions: Sequence[float],
        sizes: Sequence[Sequence[int]],
        mean: Sequence[float],
        std: Sequence[float],
        class_names: Optional[List[str]],
        path: Path,
) -> None:
    """One row per resolution: the images the predictor most confidently sent there, with the prediction."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    cols = max([len(v) for v in examples.values()] + [1])
    fig, axes = plt.subplots(len(resolutions), cols, figsize=(1.6 * cols + 1.2, 1.9 * len(resolutions)),
                             squeeze=False)
    mean_t = torch.tensor(mean).view(-1, 1, 1)
    std_t = torch.tensor(std).view(-1, 1, 1)
    for j, (r, size) in enumerate(zip(resolutions, sizes)):
        for c in range(cols):
            ax = axes[j][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c == 0:
                ax.set_ylabel(f'{r:g}x ({size[0]} px)', fontsize=9)
            kept = examples.get(j, [])
            if not kept and c == 0:
                ax.text(0.5, 0.5, 'no image\nrouted here', ha='center', va='center', fontsize=8, color='tab:gray')
            if c >= len(kept):
                continue
            e = kept[c]
            img = (e.image * std_t + mean_t).clamp(0, 1).permute(1, 2, 0).numpy()
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap='gray' if img.shape[-1] == 1 else None)
            label = class_names[e.pred] if class_names and e.pred < len(class_names) else str(e.pred)
            ax.set_title(f'{label} {e.class_prob:.2f}', fontsize=7,
                         color='tab:green' if e.pred == e.target else 'tab:red')
            ax.set_xlabel(f'p({r:g}x)={e.resolution_prob:.2f}', fontsize=7)
    fig.suptitle('Images per chosen resolution (title: prediction and its probability, red = wrong)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def install_costs(model: timm_drnet.DRNet, args: argparse.Namespace, ckpt_cfg: Optional[Dict[str, Any]],
                  input_size: Sequence[int], device: torch.device) -> None:
    """ ``--cost``: GMACs, latency measured here, or by default the table the checkpoint (or model) carries. """
    if args.cost == 'latency':
        if args.latency_batch_size < 1 or args.latency_repeats < 1:
            raise ValueError(f'--latency-batch-size and --latency-repeats must be >= 1, got '
                             f'{args.latency_batch_size} and {args.latency_repeats}.')
        table = timm_drnet.measure_cost_table(model, input_size, batch_size=args.latency_batch_size,
                                              repeats=args.latency_repeats)
        model.set_cost_table(table)
        _logger.info(f'Costs: latency measured on {device} (batch {args.latency_batch_size}, median of '
                     f'{args.latency_repeats} runs): {table.describe(model.resolutions)}.')
    elif args.cost == 'macs':
        model.reset_costs()
    elif install_saved_cost_tables(model, ckpt_cfg, input_size, args.checkpoint):
        _logger.info(f'Costs: the latency table saved in {args.checkpoint} '
                     f'({model.cost_table(input_size).describe(model.resolutions)}).')
    try:
        model.cost_table(input_size)
    except KeyError:  # a model loaded with tables (config.json) for other input sizes
        raise ValueError(f'The model\'s {model.cost_unit} cost tables do not cover input size {list(input_size)}: '
                         f'pass --cost latency to measure one, or --cost macs.') from None
    for flag, value, unit in (('--target-gmacs', args.target_gmacs, 'gmacs'), ('--target-ms', args.target_ms, 'ms')):
        if value is not None and model.cost_unit != unit:
            fix = '--cost macs' if unit == 'gmacs' else '--cost latency (measured on this device)'
            raise ValueError(f'{flag} sets a budget in {unit}, but the costs are in {model.cost_unit}; add {fix}.')


def calibration_split(args: argparse.Namespace, dataset: torch.utils.data.Dataset,
                      img_size: int) -> Tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, str]:
    """ (calibration images, images to evaluate, where the calibration images come from) for a budget.

    ``--calib-images`` random images of ``--calib-split`` of ``--calib-dir`` (a folder without that split is taken
    whole), else of the evaluated data set; when that has no such split, or it holds files of the evaluated split
    (timm falls back to the data folder itself), a random sample held out of the evaluated split instead, which
    is then evaluated without it.
    """
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise ValueError('--target-gmacs / --target-ms calibrate on a sample of a map-style data set; this one is '
                         'iterable (tfds/, wds/, hfids/).')
    if args.calib_images < 1:
        raise ValueError(f'--calib-images must be >= 1, got {args.calib_images}.')
    generator = torch.Generator().manual_seed(0)
    why_not = None
    try:
        calib = create_dataset(args.dataset, root=args.calib_dir or args.data_dir, split=args.calib_split,
                               is_training=False, img_size=img_size, num_samples=args.calib_images,
                               class_map=args.class_map, strict_data=args.strict_data, download=args.dataset_download,
                               batch_size=args.batch_size)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as e:
        if args.calib_dir:
            raise ValueError(f'--calib-dir {args.calib_dir}: no images to calibrate on ({str(e).splitlines()[0]}).') \
                from None
        calib, why_not = None, str(e).splitlines()[0]
    if calib is not None:
        pick = torch.randperm(len(calib), generator=generator)[:args.calib_images].sort().values.tolist()
        evaluated = set(dataset.filenames(absolute=True)) if hasattr(dataset, 'filenames') else set()
        where = f'{args.calib_dir} ({args.calib_split} split if any)' if args.calib_dir else \
            f'the {args.calib_split} split'
        if evaluated and any(calib.filename(i, absolute=True) in evaluated for i in pick):
            if args.calib_dir:
                raise ValueError(f'--calib-dir {args.calib_dir} holds images of the evaluated split {args.split!r}; '
                                 f'calibrate on other images.')
            why_not = f'it holds images of the evaluated split {args.split!r}'
        else:
            return LoaderSubset(calib, pick), dataset, f'{len(pick)} random images of {where}'
    if args.calib_images >= len(dataset):
        raise ValueError(f'No {args.calib_split!r} split to calibrate on ({why_not}), and the {args.split!r} split has '
                         f'only {len(dataset)} images: lower --calib-images to hold some out, or name a split to '
                         f'calibrate on with --calib-split.')
    perm = torch.randperm(len(dataset), generator=generator)
    held, rest = perm[:args.calib_images].sort().values.tolist(), perm[args.calib_images:].sort().values.tolist()
    _logger.warning(f'No separate {args.calib_split!r} split to calibrate the budget on ({why_not}): holding '
                    f'{len(held)} random images out of the {args.split!r} split for it, evaluating the other '
                    f'{len(rest)}.')
    return LoaderSubset(dataset, held), LoaderSubset(dataset, rest), \
        f'{len(held)} random images held out of the {args.split} split (not evaluated)'


def format_budget(budget: Dict[str, Any]) -> str:
    unit = unit_label(budget['unit'])
    calib = budget['calibration']
    if budget['routing'] == 'cascade':
        return (f'Budget: target {budget["target"]:.4g} {unit} per image; cascade over candidates '
                f'{calib["levels"]} calibrated on {calib["source"]}: {calib["cost"]:.4g} {unit} there (threshold '
                f'{calib["threshold"]:.4g}, reachable {calib["reachable"][0]:.4g} to {calib["reachable"][1]:.4g}); '
                f'reached {budget["achieved"]:.4g} {unit} on the evaluated images')
    return (f'Budget: target {budget["target"]:.4g} {unit} per image; calibrated on {calib["source"]}: '
            f'{calib["cost"]:.4g} {unit} there (lambda {calib["lam"]:.4g}, reachable {calib["reachable"][0]:.4g} to '
            f'{calib["reachable"][1]:.4g}); reached {budget["achieved"]:.4g} {unit} on the evaluated images')


def check_cascade_args(args: argparse.Namespace) -> None:
    """``--cascade*`` flags: turn the cascade on when a cascade setting is given, and reject settings that clash."""
    args.cascade = args.cascade or args.cascade_threshold is not None or args.cascade_levels is not None
    if not args.cascade:
        return
    has_target = args.target_gmacs is not None or args.target_ms is not None
    if args.calib_labels:
        raise ValueError('--calib-labels picks the predictor\'s resolution offsets; the cascade (--cascade) is '
                         'calibrated without labels, drop one of the two.')
    if has_target == (args.cascade_threshold is not None):
        raise ValueError('--cascade needs exactly one of --target-gmacs / --target-ms (calibrate the threshold) or '
                         '--cascade-threshold (set it).')


def validate(args: argparse.Namespace) -> Dict[str, Any]:
    """Evaluate the model ``args`` describe on its data set; prints the table and returns the results."""
    check_cascade_args(args)
    device = torch.device(args.device)
    ckpt = load_training_checkpoint(args.checkpoint) if args.checkpoint else None
    ckpt_cfg = ckpt.get('drnet') if ckpt else None
    if ckpt_cfg and args.input_size is None and args.img_size is None:
        args.input_size = list(ckpt_cfg['input_size'])
    if is_synthetic(args.dataset, args.data_dir):
        apply_synthetic_defaults(args)
    dataset = create_dataset(args.dataset, root=args.data_dir, split=args.split, is_training=False,
                             img_size=(args.input_size or [args.img_size or 64])[-1],
                             num_samples=args.synthetic_samples, class_map=args.class_map,
                             strict_data=args.strict_data, download=args.dataset_download,
                             batch_size=args.batch_size)
    classes = dataset_classes(dataset)

    flags = dict(resolutions=args.resolutions, predictor=args.predictor, predictor_size=args.predictor_size,
                 num_classes=args.num_classes)
    args.model, args.model_kwargs = resolve_model_args(args.model, args.model_kwargs, flags, ckpt_cfg,
                                                       len(classes) if classes else None)
    model = build_drnet(args.model, args.model_kwargs, args.pretrained, args.pretrained_path)
    if ckpt is not None:
        load_checkpoint_weights(model, ckpt, args.checkpoint, use_ema=args.use_ema)
    elif not args.pretrained:
        _logger.warning('No --checkpoint or --pretrained: evaluating randomly initialised weights.')
    if classes and len(classes) > model.num_classes:
        raise ValueError(f'The data set has {len(classes)} classes but the model has {model.num_classes}; '
                         f'pass --num-classes {len(classes)} or use a model trained on this data set.')
    data_config = resolve_data_config(vars(args), model=model, use_test_size=True, verbose=True)
    check_input_size(model, data_config['input_size'])
    model = model.to(device).eval()
    install_costs(model, args, ckpt_cfg, data_config['input_size'], device)

    use_amp = args.amp and device.type == 'cuda'
    if args.amp and not use_amp:
        _logger.warning('--amp needs a GPU; evaluating in float32.')
    amp_dtype = torch.bfloat16 if args.amp_dtype == 'bfloat16' else torch.float16
    amp_autocast = partial(torch.autocast, device_type='cuda', dtype=amp_dtype) if use_amp else suppress

    loader_kwargs = dict(
        input_size=data_config['input_size'], batch_size=args.batch_size, is_training=False,
        interpolation=data_config['interpolation'], mean=data_config['mean'], std=data_config['std'],
        crop_pct=data_config['crop_pct'], crop_mode=data_config.get('crop_mode'), num_workers=args.workers,
        pin_memory=args.pin_mem, device=device, use_prefetcher=not args.no_prefetcher)
    target = args.target_gmacs if args.target_gmacs is not None else args.target_ms
    calibration = None
    if args.cascade_threshold is not None:
        model.set_cascade(args.cascade_threshold, args.cascade_levels)
    if target is not None:
        calib_set, dataset, source = calibration_split(args, dataset, data_config['input_size'][-1])
        calib_loader = create_loader(calib_set, **loader_kwargs)
        with amp_autocast():
            if args.cascade:
                calibration = model.set_cascade_budget(target, calib_loader, levels=args.cascade_levels,
                                                       batch_size=args.batch_size)
            else:
                calibration = model.set_budget(target, calib_loader, batch_size=args.batch_size,
                                               labeled=args.calib_labels)
        labels = '' if args.cascade or calibration.top1 is None else f', top-1 {calibration.top1:.2f} there (labeled)'
        _logger.info(f'Budget {target:g} {unit_label(calibration.unit)}: calibrated on {source}, '
                     f'{calibration.cost:.4g} there, images answered per resolution {list(calibration.counts)}'
                     f'{labels}.')
    loader = create_loader(dataset, **loader_kwargs)

    plot_dir = Path(args.plot) if args.plot else None
    static = args.static or args.random or args.oracle or plot_dir is not None
    start = time.time()

    def log_progress(batch_idx: int, num_batches: int) -> None:
        if batch_idx % args.log_freq == 0 or batch_idx == num_batches - 1:
            elapsed = time.time() - start
            eta = elapsed / (batch_idx + 1) * (num_batches - batch_idx - 1)
            _logger.info(f'Test: [{batch_idx + 1:>4d}/{num_batches}] {elapsed:.0f}s, ETA {eta:.0f}s')

    preds = collect_predictions(model, loader, static=static, device=device,
                                amp_autocast=amp_autocast, keep_examples=args.plot_examples if plot_dir else 0,
                                log_fn=log_progress)
    table = model.cost_table(data_config['input_size'])
    sizes = model.candidate_sizes(*data_config['input_size'][1:])
    seeds = args.random_seeds if (args.random or plot_dir is not None) else 0
    summary = summarize(preds, table, model.resolutions, sizes, random_seeds=seeds,
                        routing='cascade' if model.cascade is not None else 'predictor',
                        oracle=args.oracle or plot_dir is not None)
    text = format_table(summary)
    if calibration is not None:
        calib = dict(source=source, num_images=sum(calibration.counts), cost=calibration.cost,
                     counts=list(calibration.counts), reachable=list(calibration.reachable))
        if args.cascade:
            calib.update(threshold=calibration.threshold, levels=list(calibration.levels))
        else:
            calib.update(lam=calibration.lam, labeled=args.calib_labels, top1=calibration.top1,
                         bias=calibration.bias.tolist())
        summary['budget'] = dict(target=target, unit=calibration.unit, achieved=summary['drnet']['cost'],
                                 routing=summary['drnet']['routing'], calibration=calib)
        text += '\n' + format_budget(summary['budget'])
    print(text, flush=True)

    if plot_dir is not None:
        plot_dir.mkdir(parents=True, exist_ok=True)
        plot_accuracy_vs_cost(summary, plot_dir / 'accuracy_vs_gmacs.png')
        plot_examples(preds.examples, model.resolutions, sizes, data_config['mean'], data_config['std'],
                      classes, plot_dir / 'examples.png')
        _logger.info(f'Plots written to {plot_dir}/accuracy_vs_gmacs.png and {plot_dir}/examples.png')
    result = dict(model=args.model, model_kwargs=args.model_kwargs, checkpoint=args.checkpoint,
                  data=args.data_dir or SYNTHETIC_NAME, split=args.split, **summary,
                  skipped_files=[b.path for b in skipped_files(loader)])
    if args.results_file:
        Path(args.results_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results_file).write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    setup_default_logging()
    args = parser.parse_args()
    try:
        validate(args)
    except (ValueError, FileNotFoundError, timm_drnet.UnsafeCheckpointError) as e:
        _logger.error(str(e))
        sys.exit(2)


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
""" DRNet Validation Script

Evaluates a trained DRNet the way timm's validate.py evaluates timm models, and reports what matters for a
dynamic-resolution model: top-1 / top-5, average GMACs per image with the predictor, the share of images
at each resolution and the accuracy per chosen resolution. With flags, also:

* ``--static``: every candidate resolution alone; ``--random``: a random router with the DRNet's own resolution
  shares (3 seeds, the paper's Table 5), or for a cascade random routing at its own cost; ``--oracle``: each
  image at the smallest resolution that classifies it correctly; ``--plot DIR``: the accuracy-vs-GMACs chart of
  all of these and a grid of example images per chosen resolution (the paper's Figure 4); ``--results-file``;
* ``--target-gmacs X`` / ``--target-ms X``: a compute budget set without retraining (``timm_drnet.set_budget``,
  or with ``--cascade`` a confidence cascade, ``timm_drnet.set_cascade_budget``), calibrated on
  ``--calib-images`` unlabeled images (``--calib-labels``: with their labels; ``--calib-dir``: another folder);
* ``--cost latency``: costs in ms measured on this device instead of counted GMACs.

Images are fed as the model was trained (the input size, crop and interpolation saved with a train.py
checkpoint, else the model's training settings), unless flags say otherwise. The evaluation itself is
``timm_drnet.evaluate``; this script parses flags and calls it. With no ``--data-dir`` the built-in synthetic
validation set is used:

    python validate.py --checkpoint output/train/<experiment>/drnet/last.pth.tar --static --random --oracle
    python validate.py --data-dir ../shared/data/imagenette224 --checkpoint <ckpt> --plot output/plots
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict

import torch
from timm.utils import setup_default_logging

import timm_drnet
from timm_drnet import cli
from timm_drnet.checkpoint import load_checkpoint_weights, load_training_checkpoint
from timm_drnet.config import (
    build_drnet, check_input_size, install_costs, resolve_model_args, run_data_config,
)
from timm_drnet.costs import unit_label
from timm_drnet.data import (
    SYNTHETIC_NAME, apply_synthetic_defaults, calibration_split, create_dataset, create_loader, dataset_classes,
    is_synthetic, skipped_files,
)
from timm_drnet.errors import setting_error
from timm_drnet.evaluate import budget_record, collect_predictions, format_budget, format_table, summarize
from timm_drnet.plot import plot_accuracy_vs_cost, plot_examples

_logger = logging.getLogger('validate')

parser = argparse.ArgumentParser(description='DRNet validation (timm-style)')
group = cli.add_data_args(parser, synthetic_samples=(2000,))
group.add_argument('--split', metavar='NAME', default='validation', help='dataset split (default: validation)')
group = cli.add_model_args(parser, batch_size=128)
group.add_argument('--checkpoint', default='', type=str, metavar='PATH',
                   help='weights: a train.py checkpoint, a state dict or a .safetensors file')
group.add_argument('--use-ema', action='store_true', default=False, help='use the checkpoint\'s EMA weights')
group = cli.add_runtime_args(parser)
group.add_argument('--log-freq', default=10, type=int, metavar='N', help='batch logging frequency')
cli.add_cost_args(parser, cost_help='costs in counted GMACs, or in ms measured on this device (default: the latency '
                                    'table saved with the checkpoint, if any, else GMACs)')
group = parser.add_argument_group('Report')
group.add_argument('--static', action='store_true', default=False, help='also evaluate each resolution alone')
group.add_argument('--random', action='store_true', default=False,
                   help='also random routing: the DRNet\'s resolution shares (or a cascade\'s cost) (implies --static)')
group.add_argument('--random-seeds', type=int, default=3, metavar='N', help='random router seeds (default: 3)')
group.add_argument('--oracle', action='store_true', default=False,
                   help='also the oracle: smallest correct resolution per image (implies --static)')
group.add_argument('--plot', default='', type=str, metavar='DIR',
                   help='write accuracy_vs_gmacs.png and examples.png to DIR (implies --static --random --oracle)')
group.add_argument('--plot-examples', type=int, default=8, metavar='N', help='example images per resolution')
group.add_argument('--results-file', default='', type=str, metavar='FILENAME', help='write the results as JSON')
group = parser.add_argument_group('Compute budget')
budget = group.add_mutually_exclusive_group()
budget.add_argument('--target-gmacs', type=float, default=None, metavar='GMACS',
                    help='evaluate at this mean GMACs per image (predictor included), set by calibrating the '
                         'predictor\'s resolution offsets on unlabeled images (timm_drnet.set_budget), no retraining')
budget.add_argument('--target-ms', type=float, default=None, metavar='MS',
                    help='the same for a latency budget in ms per image (needs latency costs: --cost latency or a '
                         'checkpoint trained with them)')
group.add_argument('--calib-images', type=int, default=256, metavar='N',
                   help='unlabeled images the budget is calibrated on (default: 256)')
group.add_argument('--calib-dir', default=None, metavar='DIR',
                   help='data set root the calibration images come from (default: --data-dir); e.g. a folder of '
                        'images the model was not trained on, whose confidences match those of new images')
group.add_argument('--calib-split', default='train', metavar='NAME',
                   help='split the calibration images are drawn from at random (default: train); without it, they '
                        'are held out of the evaluated split')
group.add_argument('--calib-labels', action='store_true',
                   help='calibrate the budget with the calibration images\' labels too: per-resolution offsets that '
                        'classify the most of them correctly within the budget (set_budget(labeled=True); runs the '
                        'backbone at every resolution on them)')
group.add_argument('--cascade', action='store_true',
                   help='route by confidence cascade instead of the predictor: each image runs at the smallest '
                        'level first and moves up while its top class probability is below a threshold, which '
                        '--target-gmacs / --target-ms calibrate on unlabeled images (set_cascade_budget) or '
                        '--cascade-threshold sets; no trained predictor needed')
group.add_argument('--cascade-threshold', type=float, default=None, metavar='P',
                   help='cascade stopping probability (implies --cascade)')
group.add_argument('--cascade-levels', type=int, nargs='+', default=None, metavar='J',
                   help='candidate indices the cascade runs, in order (0 = largest; default: every candidate, '
                        'smallest first; implies --cascade)')


def check_args(args: argparse.Namespace) -> None:
    """Flags that clash: the cascade settings, and budget targets in a unit the costs are not in."""
    args.cascade = args.cascade or args.cascade_threshold is not None or args.cascade_levels is not None
    if args.cascade and args.calib_labels:
        raise ValueError('--calib-labels picks the predictor\'s resolution offsets; the cascade (--cascade) is '
                         'calibrated without labels, drop one of the two.')
    if args.cascade and (args.target_gmacs is None and args.target_ms is None) == (args.cascade_threshold is None):
        raise ValueError('--cascade needs exactly one of --target-gmacs / --target-ms (calibrate the threshold) or '
                         '--cascade-threshold (set it).')
    if args.latency_batch_size < 1 or args.latency_repeats < 1:
        raise ValueError(f'--latency-batch-size and --latency-repeats must be >= 1, got {args.latency_batch_size} '
                         f'and {args.latency_repeats}.')


def validate(args: argparse.Namespace) -> Dict[str, Any]:
    """Evaluate the model ``args`` describe on its data set; prints the table and returns the results."""
    check_args(args)
    device = torch.device(args.device)
    ckpt = load_training_checkpoint(args.checkpoint) if args.checkpoint else None
    ckpt_cfg = ckpt.get('drnet') if ckpt else None
    if ckpt_cfg and args.input_size is None and args.img_size is None:
        args.input_size = list(ckpt_cfg['input_size'])
    if is_synthetic(args.dataset, args.data_dir):
        apply_synthetic_defaults(args)
    dataset_kwargs = dict(img_size=(args.input_size or [args.img_size or 64])[-1], class_map=args.class_map,
                          strict_data=args.strict_data, download=args.dataset_download, batch_size=args.batch_size)
    dataset = create_dataset(args.dataset, root=args.data_dir, split=args.split, is_training=False,
                             num_samples=args.synthetic_samples, **dataset_kwargs)
    classes = dataset_classes(dataset)
    settings = dict(resolutions=args.resolutions, predictor=args.predictor, predictor_size=args.predictor_size,
                    num_classes=args.num_classes)
    args.model, args.model_kwargs = resolve_model_args(args.model, args.model_kwargs, settings, ckpt_cfg,
                                                       len(classes) if classes else None)
    model = build_drnet(args.model, args.model_kwargs, args.pretrained, args.pretrained_path)
    if ckpt is not None:
        load_checkpoint_weights(model, ckpt, args.checkpoint, use_ema=args.use_ema)
    elif not args.pretrained:
        _logger.warning('No --checkpoint or --pretrained: evaluating randomly initialised weights.')
    if classes and len(classes) > model.num_classes:
        raise setting_error(ValueError, f'The data set has {len(classes)} classes but the model has '
                                        f'{model.num_classes}; set {{num_classes}} {len(classes)} or use a model '
                                        f'trained on this data set.')
    dc = run_data_config(vars(args), model, ckpt_cfg, verbose=True)
    check_input_size(model, dc['input_size'])
    model = model.to(device).eval()
    install_costs(model, args.cost, dc['input_size'], ckpt_cfg, args.checkpoint, lambda: timm_drnet.measure_cost_table(
        model, dc['input_size'], batch_size=args.latency_batch_size, repeats=args.latency_repeats))
    for flag, value, unit in (('--target-gmacs', args.target_gmacs, 'gmacs'), ('--target-ms', args.target_ms, 'ms')):
        if value is not None and model.cost_unit != unit:
            fix = '--cost macs' if unit == 'gmacs' else '--cost latency (measured on this device)'
            raise ValueError(f'{flag} sets a budget in {unit}, but the costs are in {model.cost_unit}; add {fix}.')
    precision = timm_drnet.create_precision(args.amp, args.amp_dtype, device)

    loader_kwargs = dict(input_size=dc['input_size'], batch_size=args.batch_size, is_training=False,
                         interpolation=dc['interpolation'], mean=dc['mean'], std=dc['std'], crop_pct=dc['crop_pct'],
                         crop_mode=dc.get('crop_mode'), num_workers=args.workers, pin_memory=args.pin_mem,
                         device=device, use_prefetcher=not args.no_prefetcher)
    target = args.target_gmacs if args.target_gmacs is not None else args.target_ms
    calibration, routing = None, 'cascade' if args.cascade else 'predictor'
    if args.cascade_threshold is not None:
        model.set_cascade(args.cascade_threshold, args.cascade_levels)
    if target is not None:
        calib_set, dataset, source = calibration_split(
            dataset, args.calib_images, args.dataset, args.data_dir, args.split, args.calib_dir, args.calib_split,
            **dataset_kwargs)
        with precision.autocast():
            calib_loader = create_loader(calib_set, **loader_kwargs)
            if args.cascade:
                calibration = timm_drnet.set_cascade_budget(model, target, calib_loader, levels=args.cascade_levels,
                                                            batch_size=args.batch_size)
            else:
                calibration = timm_drnet.set_budget(model, target, calib_loader, batch_size=args.batch_size,
                                                    labeled=args.calib_labels)
        labels = '' if args.cascade or calibration.top1 is None else f', top-1 {calibration.top1:.2f} there (labeled)'
        _logger.info(f'Budget {target:g} {unit_label(calibration.unit)}: calibrated on {source}, '
                     f'{calibration.cost:.4g} there, images answered per resolution {list(calibration.counts)}'
                     f'{labels}.')
    if not args.cascade and not model.predictor_trained:
        routing = 'untrained'
    loader = create_loader(dataset, **loader_kwargs)

    plot_dir = Path(args.plot) if args.plot else None
    static = args.static or args.random or args.oracle or plot_dir is not None
    start = time.time()

    def log_progress(batch_idx: int, num_batches: int) -> None:
        if batch_idx % args.log_freq == 0 or batch_idx == num_batches - 1:
            elapsed = time.time() - start
            _logger.info(f'Test: [{batch_idx + 1:>4d}/{num_batches}] {elapsed:.0f}s, '
                         f'ETA {elapsed / (batch_idx + 1) * (num_batches - batch_idx - 1):.0f}s')

    preds = collect_predictions(model, loader, static=static, amp_autocast=precision.autocast,
                                device=device if args.no_prefetcher else None,
                                keep_examples=args.plot_examples if plot_dir else 0, log_fn=log_progress)
    sizes = model.candidate_sizes(*dc['input_size'][1:])
    summary = summarize(preds, model.cost_table(dc['input_size']), model.resolutions, sizes,
                        random_seeds=args.random_seeds if (args.random or plot_dir is not None) else 0,
                        routing=routing, oracle=args.oracle or plot_dir is not None)
    text = format_table(summary)
    if calibration is not None:
        summary['budget'] = budget_record(calibration, source, target, summary['drnet']['cost'], routing)
        text += '\n' + format_budget(summary['budget'])
    print(text, flush=True)

    if plot_dir is not None:
        plot_dir.mkdir(parents=True, exist_ok=True)
        plot_accuracy_vs_cost(summary, plot_dir / 'accuracy_vs_gmacs.png')
        plot_examples(preds.examples, model.resolutions, sizes, dc['mean'], dc['std'], classes,
                      plot_dir / 'examples.png')
        _logger.info(f'Plots written to {plot_dir}/accuracy_vs_gmacs.png and {plot_dir}/examples.png')
    result = dict(model=args.model, model_kwargs=args.model_kwargs, checkpoint=args.checkpoint,
                  data=args.data_dir or SYNTHETIC_NAME, split=args.split, data_config=dc, **summary,
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
        _logger.error(cli.error_message(e, parser))
        sys.exit(2)


if __name__ == '__main__':
    main()

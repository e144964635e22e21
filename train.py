#!/usr/bin/env python3
""" DRNet Training Script

Trains Dynamic Resolution Networks (Zhu et al., NeurIPS 2021) the way timm's train.py trains timm models,
with timm's data, optimizer, scheduler, EMA and checkpoint utilities, in the paper's two stages:

* ``--stage multires`` (stage 1): every batch at all m candidate resolutions, each through its own private
  BN branch, the m cross-entropy losses summed. The predictor is frozen and unused.
* ``--stage drnet`` (stage 2): predictor and backbone fine-tuned jointly, each image at the resolution the
  predictor picks (Gumbel-softmax, straight through), loss = CE + eta * FLOPs loss; the predictor learns at
  ``--predictor-lr-scale`` x the learning rate.
* ``--stage both`` (the default): stage 1, then stage 2 starting from its weights.
* ``--stage predictor`` (beyond the paper, instead of stage 2): the backbone frozen, the predictor learns each
  training image's loss at every resolution (``timm_drnet.train.predictor``), computed in one pass without
  augmentation; ``--epochs`` of the predictor alone follow at little cost.

With no ``--data-dir`` the built-in synthetic data set is used, so ``python train.py`` alone runs the whole
recipe on a small DRNet on a CPU and ends with a table of the DRNet against the static backbone at each
resolution and a random router at the DRNet's resolution shares.

Outputs go to ``<output>/<experiment>/<stage>/``: ``last.pth.tar`` and the best ``checkpoint-N.pth.tar``
(complete training state, atomic writes, weights-only loadable), ``summary.csv``, ``args.yaml``, and at the
end of a stage ``model.safetensors`` + ``config.json`` (``timm.create_model('local-dir:<dir>')`` loads them).
SIGTERM stops training after the current step with that step's state in ``last.pth.tar`` (exit status 143);
``--resume`` continues the interrupted epoch exactly, with the checkpoint's settings. The training itself is
``timm_drnet.train``; this script parses flags and calls it.

The paper's ImageNet recipe on 8 GPUs:
    torchrun --nproc_per_node=8 train.py -c configs/drnet_resnet50_multires.yaml --data-dir /data/imagenet
"""
import argparse
import json
import logging
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
import yaml
from timm.layers import convert_sync_batchnorm
from timm.models import safe_model_name
from timm.optim import optimizer_kwargs
from timm.scheduler import scheduler_kwargs
from timm.utils import add_bool_arg, init_distributed_device, random_seed, setup_default_logging

import timm_drnet
from timm_drnet import cli, train as drnet_train
from timm_drnet.checkpoint import load_checkpoint_weights, load_training_checkpoint
from timm_drnet.config import (
    build_drnet, check_input_size, drnet_config, install_costs, load_drnet, resolve_model_args, run_data_config,
    saved_cost_tables,
)
from timm_drnet.data import apply_synthetic_defaults, create_dataset, create_loader, dataset_classes, is_synthetic
from timm_drnet.errors import literal, setting_error
from timm_drnet.evaluate import collect_predictions, format_table, summarize

_logger = logging.getLogger('train')

# The first arg parser parses out only the --config argument, this argument is used to
# load a yaml file containing key-values that override the defaults for the main parser below
config_parser = parser = argparse.ArgumentParser(description='Training Config', add_help=False)
parser.add_argument('-c', '--config', default='', type=str, metavar='FILE',
                    help='YAML config file specifying default arguments')

parser = argparse.ArgumentParser(description='DRNet training (timm-style, two stages)')
group = cli.add_data_args(parser, synthetic_samples=(6000, 2000))
group.add_argument('--train-split', metavar='NAME', default='train', help='dataset train split (default: train)')
group.add_argument('--val-split', metavar='NAME', default='validation',
                   help='dataset validation split (default: validation)')
group = cli.add_model_args(parser, batch_size=64)
group.add_argument('-vb', '--validation-batch-size', type=int, default=None, metavar='N',
                   help='validation batch size override (default: None)')
group.add_argument('--initial-checkpoint', default='', type=str, metavar='PATH',
                   help='load these model weights (e.g. a stage-1 checkpoint) before training')
group.add_argument('--resume', default='', type=str, metavar='PATH',
                   help='resume the full training state (epoch, optimizer, scheduler, EMA, RNG) from checkpoint, '
                        'with the settings it was trained with')
group.add_argument('--resume-override', action='store_true', default=False,
                   help='with --resume, continue with the settings given here where they differ from the checkpoint\'s')
group.add_argument('--no-resume-opt', action='store_true', default=False,
                   help='prevent resume of optimizer state when resuming model')
group.add_argument('--grad-checkpointing', action='store_true', default=False,
                   help='recompute each resolution\'s backbone pass in backward (less memory, about 1/3 more time)')
group.add_argument('--sync-bn', action='store_true', default=False,
                   help='synchronise BatchNorm statistics across GPUs (stage 1, or stage 2 with --freeze-backbone)')

group = parser.add_argument_group('DRNet parameters')
group.add_argument('--stage', default='both', choices=('both', *drnet_train.STAGES, 'predictor'),
                   help='multires (stage 1), drnet (stage 2), both in turn, or predictor (the predictor learns each '
                        'image\'s per-resolution loss, backbone frozen) (default: both)')
group.add_argument('--multires-epochs', type=int, default=5, metavar='N',
                   help='stage-1 epochs with --stage both (--epochs is then stage 2\'s) (default: 5)')
group.add_argument('--flops-target', type=float, default=None, metavar='COST',
                   help='alpha: target average backbone cost per image, GMACs (ms with --cost latency) (paper '
                        'eq. 7; default: the mean of the candidates\' costs, what a uniform random choice spends)')
group.add_argument('--flops-weight', type=float, default=0.1, metavar='ETA',
                   help='eta: weight of the FLOPs loss (paper eq. 8, its ablation spans 0.1 to 1; default: 0.1)')
add_bool_arg(group, 'flops-two-sided', default=True,
             help='penalise the average cost below alpha too, holding it at alpha (default: on; the paper only '
                  'caps it, --no-flops-two-sided, which on the built-in set lets routing collapse to the '
                  'smallest resolution)')
group.add_argument('--gumbel-tau', type=float, default=3.0, metavar='TAU',
                   help='Gumbel-softmax temperature at the start of stage 2 (default: 3.0)')
group.add_argument('--gumbel-tau-end', type=float, default=None, metavar='TAU',
                   help='temperature at the end of stage 2, decayed per update (default: none, constant)')
group.add_argument('--gumbel-tau-decay', default='exp', choices=('exp', 'linear', 'cosine'),
                   help='shape of the temperature decay with --gumbel-tau-end (default: exp)')
group.add_argument('--predictor-grad', default=None, choices=timm_drnet.PREDICTOR_GRADS,
                   help='the predictor\'s straight-through gradient: routed (each image\'s chosen resolution only), '
                        'or all (also each image\'s logits at the other resolutions, computed without gradient: '
                        'the predictor compares resolutions, one extra forward per image and resolution) '
                        '(default: the model\'s, routed)')
group.add_argument('--predictor-lr-scale', type=float, default=0.1, metavar='SCALE',
                   help='predictor learning rate as a multiple of --lr (paper: 0.1, the default)')
group.add_argument('--freeze-backbone', action='store_true', default=False,
                   help='stage 2 trains the predictor only (backbone weights and BN statistics fixed)')
group.add_argument('--target-temperature', type=float, default=1.0, metavar='T',
                   help='--stage predictor: temperature of its targets softmax(-(loss_j + w C_j / C_0) / T)')
group.add_argument('--target-cost-weight', type=float, default=0.0, metavar='W',
                   help='--stage predictor: w, the price of cost in its targets (default: 0; budgets are set at '
                        'inference)')
group.add_argument('--distill', default='none', choices=timm_drnet.DISTILL_MODES,
                   help='stage-1 cross-resolution distillation: inplace (smaller resolutions learn the full '
                        'resolution), ensemble (RS-Nets: a learned ensemble teacher, and top-down from every higher '
                        'resolution), teacher (every resolution learns --distill-teacher) (default: none, the paper)')
group.add_argument('--distill-weight', type=float, default=1.0, metavar='W', help='weight of each distillation term')
group.add_argument('--distill-temperature', type=float, default=1.0, metavar='T',
                   help='softmax temperature of distillation (default: 1)')
group.add_argument('--distill-teacher', default='', metavar='PATH',
                   help='the teacher of --distill teacher: a train.py checkpoint or exported model folder of a DRNet '
                        '(e.g. the static model), run at its first candidate')

group = parser.add_argument_group('Optimizer parameters')
group.add_argument('--opt', default='sgd', type=str, metavar='OPTIMIZER', help='optimizer (default: "sgd")')
group.add_argument('--opt-eps', default=None, type=float, metavar='EPSILON', help='optimizer epsilon')
group.add_argument('--opt-betas', default=None, type=float, nargs='+', metavar='BETA', help='optimizer betas')
group.add_argument('--momentum', type=float, default=0.9, metavar='M', help='optimizer momentum (default: 0.9)')
group.add_argument('--weight-decay', type=float, default=1e-4, help='weight decay (default: 1e-4)')

group = parser.add_argument_group('Learning rate schedule parameters')
group.add_argument('--sched', type=str, default='cosine', metavar='SCHEDULER',
                   help='LR scheduler (default: "cosine"; the paper uses "step")')
add_bool_arg(group, 'sched-on-updates', default=True,
             help='step the LR schedule (and warmup) every update rather than every epoch (default: on)')
group.add_argument('--lr', type=float, default=0.1, metavar='LR', help='learning rate (default: 0.1)')
group.add_argument('--warmup-lr', type=float, default=1e-5, metavar='LR', help='warmup learning rate (default: 1e-5)')
group.add_argument('--min-lr', type=float, default=0, metavar='LR', help='lower lr bound for cyclic schedulers')
group.add_argument('--epochs', type=int, default=6, metavar='N',
                   help='number of epochs to train (stage 2\'s with --stage both) (default: 6)')
group.add_argument('--decay-epochs', type=float, default=90, metavar='N', help='epoch interval to decay LR')
group.add_argument('--decay-milestones', default=[90, 180, 270], type=int, nargs='+', metavar='MILESTONES',
                   help='list of decay epoch indices for multistep lr')
group.add_argument('--decay-rate', '--dr', type=float, default=0.1, metavar='RATE', help='LR decay rate')
group.add_argument('--warmup-epochs', type=int, default=1, metavar='N', help='epochs to warmup LR (default: 1)')

group = parser.add_argument_group('Augmentation and regularization parameters')
group.add_argument('--no-aug', action='store_true', default=False, help='disable all training augmentation')
group.add_argument('--scale', type=float, nargs=2, default=None, metavar=('MIN', 'MAX'),
                   help='random resize crop area range (default: 0.08 1, the synthetic set 0.7 1)')
group.add_argument('--ratio', type=float, nargs=2, default=[3. / 4., 4. / 3.], metavar=('MIN', 'MAX'),
                   help='random resize crop aspect ratio range (default: 0.75 1.33)')
group.add_argument('--hflip', type=float, default=0.5, help='horizontal flip training aug probability')
group.add_argument('--vflip', type=float, default=0., help='vertical flip training aug probability')
group.add_argument('--color-jitter', type=float, default=0.4, metavar='PCT', help='color jitter factor')
group.add_argument('--aa', type=str, default=None, metavar='NAME', help='auto augment policy, e.g. "rand-m9-mstd0.5"')
group.add_argument('--smoothing', type=float, default=0.0, help='label smoothing (default: 0, the paper\'s CE)')
group.add_argument('--train-interpolation', type=str, default=None,
                   help='training interpolation (random, bilinear, bicubic; default: the data config\'s)')

group = parser.add_argument_group('Model exponential moving average parameters')
group.add_argument('--model-ema', action='store_true', default=False, help='keep an EMA of the model weights')
group.add_argument('--model-ema-decay', type=float, default=0.9998, help='decay factor for model weights EMA')
group.add_argument('--model-ema-warmup', action='store_true', help='enable warmup for model EMA decay')

group = cli.add_runtime_args(parser)
group.add_argument('--seed', type=int, default=42, metavar='S', help='random seed (default: 42)')
group.add_argument('--log-interval', type=int, default=50, metavar='N', help='batches between progress logs')
group.add_argument('--checkpoint-hist', type=int, default=3, metavar='N', help='number of checkpoints to keep')
group.add_argument('--output', default='', type=str, metavar='PATH', help='output folder (default: ./output/train)')
group.add_argument('--experiment', default='', type=str, metavar='NAME',
                   help='name of the train experiment, the output subfolder (default: a timestamp, or the '
                        'resumed checkpoint\'s)')
group.add_argument('--eval-metric', default='top1', type=str, metavar='EVAL_METRIC', help='best metric (default: top1)')
group.add_argument('--dist-bn', type=str, default='reduce', choices=('broadcast', 'reduce', ''),
                   help='distribute BatchNorm stats between nodes after each epoch (default: reduce)')
group.add_argument('--no-ddp-bb', action='store_true', default=False,
                   help='do not broadcast buffers (BN statistics) from rank 0 at every DDP forward')
cli.add_cost_args(parser, cost_help='C_j of the FLOPs loss and of every reported average: counted GMACs, or the '
                                    'latency (ms per image, predictor included) measured on this device before '
                                    'training and saved with the checkpoints (default: the table saved in the '
                                    '--resume / --initial-checkpoint checkpoint, if any, else macs)')


def _parse_args() -> Tuple[argparse.Namespace, set]:
    """The flags (a config file's values as defaults), and the settings given explicitly (flags or config)."""
    args_config, remaining = config_parser.parse_known_args()
    cfg = {}
    if args_config.config:
        with open(args_config.config, 'r') as f:
            cfg = yaml.safe_load(f) or {}
        unknown = sorted(set(cfg) - {a.dest for a in parser._actions})
        if unknown:
            parser.error(f'{args_config.config}: unknown setting(s) {unknown}; use the long flag names with '
                         f'underscores, e.g. batch_size, flops_target')
        parser.set_defaults(**cfg)
    args = parser.parse_args(remaining)
    return args, cli.given_settings(parser, remaining, cfg)


def setup(args: argparse.Namespace, given: set) -> Dict[str, Any]:
    """Checkpoint, data sets, model and data config, with clear errors for bad settings."""
    if args.resume and args.initial_checkpoint:
        raise setting_error(ValueError, 'Use either {resume} (continue a run) or {initial_checkpoint} (start from '
                                        'weights), not both.')
    ckpt_path = args.resume or args.initial_checkpoint
    ckpt = load_training_checkpoint(ckpt_path) if ckpt_path else None
    ckpt_cfg = ckpt.get('drnet') if ckpt else None
    if args.resume:
        if not ckpt.get('stage'):
            raise setting_error(ValueError, f'{literal(args.resume)} is not a train.py training checkpoint (no stage '
                                            f'or training state); start from its weights with {{initial_checkpoint}}.')
        saved = dict(ckpt.get('args') or {}, resolutions=ckpt_cfg['resolutions'])
        current = dict(vars(args), resolutions=args.resolutions or ckpt_cfg['resolutions'])
        vars(args).update(drnet_train.resume_settings(saved, current, given, override=args.resume_override))
    if ckpt_cfg and args.input_size is None and args.img_size is None:
        args.input_size = list(ckpt_cfg['input_size'])
    if is_synthetic(args.dataset, args.data_dir):
        apply_synthetic_defaults(args)
    kwargs = dict(img_size=(args.input_size or [args.img_size or 64])[-1], class_map=args.class_map,
                  strict_data=args.strict_data, download=args.dataset_download, batch_size=args.batch_size)
    datasets = [create_dataset(args.dataset, root=args.data_dir, split=split, is_training=training,
                               num_samples=samples, **kwargs)
                for split, training, samples in ((args.train_split, True, args.synthetic_samples[0]),
                                                 (args.val_split, False, args.synthetic_samples[1]))]
    classes = dataset_classes(datasets[0])
    settings = dict(resolutions=args.resolutions, predictor=args.predictor, predictor_size=args.predictor_size,
                    predictor_grad=args.predictor_grad, num_classes=args.num_classes)
    args.model, kwargs = resolve_model_args(args.model, args.model_kwargs, settings, ckpt_cfg,
                                            len(classes) if classes else None)
    args.num_classes, args.model_kwargs = kwargs.pop('num_classes'), kwargs
    if classes and len(classes) > args.num_classes:
        raise setting_error(ValueError, f'The data set has {len(classes)} classes but the model is built for '
                                        f'{args.num_classes}; set {{num_classes}} {len(classes)}.')
    model = build_drnet(args.model, dict(kwargs, num_classes=args.num_classes), args.pretrained, args.pretrained_path)
    if ckpt is not None:
        load_checkpoint_weights(model, ckpt, ckpt_path)
    data_config = run_data_config(vars(args), model, ckpt_cfg, verbose=args.rank == 0)
    check_input_size(model, data_config['input_size'])
    return dict(model=model, ckpt=ckpt, ckpt_cfg=ckpt_cfg, datasets=datasets, data_config=data_config)


def create_loaders(args: argparse.Namespace, s: Dict[str, Any], device: torch.device) -> Tuple[Any, Any]:
    """Training and validation loaders; ``--stage predictor`` reads the training images as evaluation does."""
    dc = s['data_config']
    common = dict(input_size=dc['input_size'], mean=dc['mean'], std=dc['std'], num_workers=args.workers,
                  distributed=args.distributed, pin_memory=args.pin_mem, device=device,
                  use_prefetcher=not args.no_prefetcher,
                  persistent_workers=False)  # fresh workers seeded from the main RNG each epoch: resume is exact
    evaluation = dict(is_training=False, interpolation=dc['interpolation'], crop_pct=dc['crop_pct'],
                      crop_mode=dc.get('crop_mode'), **common)
    if args.stage == 'predictor':
        train = create_loader(s['datasets'][0], batch_size=args.validation_batch_size or args.batch_size, **evaluation)
    else:
        train = create_loader(s['datasets'][0], batch_size=args.batch_size, is_training=True, no_aug=args.no_aug,
                              scale=args.scale, ratio=args.ratio, hflip=args.hflip, vflip=args.vflip,
                              color_jitter=args.color_jitter, auto_augment=args.aa,
                              interpolation=args.train_interpolation or dc['interpolation'], **common)
    val = create_loader(s['datasets'][1], batch_size=args.validation_batch_size or args.batch_size, **evaluation)
    return train, val


def stage_settings(args: argparse.Namespace, stage: str) -> drnet_train.StageSettings:
    epochs = args.multires_epochs if stage == 'multires' and args.stage == 'both' else args.epochs
    sched = scheduler_kwargs(args)
    sched.pop('num_epochs')
    return drnet_train.StageSettings(
        stage=stage, epochs=epochs, optimizer=optimizer_kwargs(cfg=args), scheduler=sched,
        predictor_lr_scale=args.predictor_lr_scale, freeze_backbone=args.freeze_backbone, smoothing=args.smoothing,
        flops_target=args.flops_target, flops_weight=args.flops_weight, flops_two_sided=args.flops_two_sided,
        gumbel=drnet_train.GumbelSchedule(args.gumbel_tau, args.gumbel_tau_end, args.gumbel_tau_decay),
        model_ema=args.model_ema, model_ema_decay=args.model_ema_decay, model_ema_warmup=args.model_ema_warmup,
        resume_optimizer=not args.no_resume_opt, log_interval=args.log_interval, eval_metric=args.eval_metric,
        checkpoint_hist=args.checkpoint_hist, dist_bn=args.dist_bn, broadcast_buffers=not args.no_ddp_bb,
        sync_bn=args.sync_bn, distill=args.distill if stage == 'multires' else 'none',
        distill_weight=args.distill_weight, distill_temperature=args.distill_temperature)


def final_report(model: timm_drnet.DRNet, args: argparse.Namespace, s: Dict[str, Any], device: torch.device,
                 exp_dir: Path) -> None:
    """DRNet vs static resolutions vs random routing vs oracle on the validation set (rank 0, whole set)."""
    dc = s['data_config']
    loader = create_loader(s['datasets'][1], input_size=dc['input_size'], is_training=False,
                           batch_size=args.validation_batch_size or args.batch_size, interpolation=dc['interpolation'],
                           mean=dc['mean'], std=dc['std'], crop_pct=dc['crop_pct'], crop_mode=dc.get('crop_mode'),
                           num_workers=args.workers, device=device, use_prefetcher=not args.no_prefetcher,
                           persistent_workers=False)
    precision = timm_drnet.create_precision(args.amp, args.amp_dtype, device)
    preds = collect_predictions(model, loader, static=True, device=device, amp_autocast=precision.autocast)
    summary = summarize(preds, model.cost_table(dc['input_size']), model.resolutions,
                        model.candidate_sizes(*dc['input_size'][1:]))
    text = format_table(summary)
    (exp_dir / 'results.json').write_text(json.dumps(summary, indent=2))
    (exp_dir / 'results.txt').write_text(text + '\n')
    print('\n' + text, flush=True)


def run(args: argparse.Namespace, given: set, device: torch.device, ctx: drnet_train.Distributed) -> None:
    stop = drnet_train.StopSignal()
    s = setup(args, given)
    model, dc = s['model'].to(device), s['data_config']
    trained_with = 'latency' if saved_cost_tables(s['ckpt_cfg']) else 'macs'
    if args.resume and args.cost not in (None, trained_with):
        raise setting_error(ValueError, f'{literal(args.resume)} was trained with {{cost}} {trained_with}; a resumed '
                                        f'run keeps its costs (the FLOPs loss and {{flops_target}} are in their '
                                        f'units). Drop {{cost}} {args.cost}, or start a new run from its weights with '
                                        f'{{initial_checkpoint}}.')
    if args.latency_batch_size < 1 or args.latency_repeats < 1:
        raise setting_error(ValueError, f'{{latency_batch_size}} and {{latency_repeats}} must be >= 1, got '
                                        f'{args.latency_batch_size} and {args.latency_repeats}.')
    precision = timm_drnet.create_precision(args.amp, args.amp_dtype, device, training=True)

    def measure() -> timm_drnet.CostTable:  # on rank 0, shared with every rank
        return drnet_train.broadcast_from_primary(lambda: timm_drnet.measure_cost_table(
            model, dc['input_size'], batch_size=args.latency_batch_size, repeats=args.latency_repeats), ctx)
    with precision.autocast():
        args.cost = install_costs(model, None if args.resume else args.cost, dc['input_size'], s['ckpt_cfg'],
                                  args.resume or args.initial_checkpoint, measure)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if args.sync_bn and args.distributed:
        if device.type != 'cuda':
            raise setting_error(ValueError, f'{{sync_bn}} needs CUDA devices (torch syncs BatchNorm on GPUs only), '
                                            f'this run is on {device.type}.')
        model = timm_drnet.guard_single_value_norms(convert_sync_batchnorm(model))
    resume = s['ckpt'] if args.resume else None
    stages = drnet_train.STAGES if args.stage == 'both' else (args.stage,)
    if resume is not None and args.stage == 'predictor':
        raise setting_error(ValueError, '{stage} predictor starts over (its pass and epochs take minutes): start it '
                                        'from the stage-1 weights with {initial_checkpoint}.')
    if resume is not None:
        if resume['stage'] not in stages:
            raise setting_error(ValueError, f'{literal(args.resume)} is a stage-{resume["stage"]} checkpoint, this '
                                            f'run trains stage {args.stage}; to start stage {args.stage} from its '
                                            f'weights use {{initial_checkpoint}}.')
        stages = stages[stages.index(resume['stage']):]
    if ctx.primary:
        _logger.info(f'Model {args.model} {args.model_kwargs}: {sum(p.numel() for p in model.parameters()):,} '
                     f'params, {args.num_classes} classes, data config {dc}')
    if args.resume and not args.experiment:  # continue in the resumed run's folder
        exp_dir = Path(args.resume).resolve().parent.parent
    else:
        exp_dir = Path(args.output or './output/train') / (args.experiment or '-'.join([
            datetime.now().strftime('%Y%m%d-%H%M%S'), safe_model_name(args.model), str(dc['input_size'][-1])]))
    loaders = create_loaders(args, s, device)
    record = drnet_train.CheckpointRecord(
        arch=args.model, model_args=args.model_kwargs, data_config=dc, run_args=dict(vars(args)),
        drnet_config=drnet_config(model, args.model, args.model_kwargs, dc['input_size'], dc),
        args_text=yaml.safe_dump(vars(args), default_flow_style=False))
    if args.stage == 'predictor':
        if args.distributed:
            raise ValueError('--stage predictor runs in one process (its pass and epochs take minutes); launch it '
                             'without torchrun.')
        settings = drnet_train.PredictorFitSettings(
            epochs=args.epochs, batch_size=args.batch_size, optimizer=optimizer_kwargs(cfg=args),
            warmup_epochs=args.warmup_epochs, temperature=args.target_temperature, cost_weight=args.target_cost_weight)
        (exp_dir / 'predictor').mkdir(parents=True, exist_ok=True)
        drnet_train.train_predictor_stage(model, settings, *loaders, exp_dir / 'predictor', record, precision, stop,
                                          device if args.no_prefetcher else None)
        final_report(model, args, s, device, exp_dir)
        return
    if (args.distill != 'none' or args.distill_teacher) and 'multires' not in stages:
        raise setting_error(ValueError, '{distill} and {distill_teacher} are for stage 1 (multires), which this run '
                                        'does not train.')
    settings = {stage: stage_settings(args, stage) for stage in stages}  # every stage's settings checked up front
    if 'drnet' in stages:
        costs = model.cost_table(dc['input_size'])
        drnet_train.resolve_flops_target(args.flops_target, costs.backbone, costs.unit, args.flops_two_sided)
    teacher = load_drnet(args.distill_teacher).to(device) if args.distill_teacher else None
    model_ema = None
    for stage in stages:
        stage_dir = exp_dir / stage
        if ctx.primary:
            stage_dir.mkdir(parents=True, exist_ok=True)
        stage_resume = resume if resume is not None and resume['stage'] == stage else None
        model_ema = drnet_train.train_stage(model, settings[stage], *loaders, device, stage_dir, record, precision,
                                            stop, ctx, stage_resume, args.resume, args.no_prefetcher,
                                            teacher if stage == 'multires' else None)
    if stages[-1] == 'drnet' and ctx.primary:
        final_report(model_ema.module if model_ema is not None else model, args, s, device, exp_dir)


def main() -> None:
    setup_default_logging()
    args, given = _parse_args()
    device = init_distributed_device(args)
    ctx = drnet_train.Distributed(args.rank, args.world_size, args.distributed)
    if args.distributed:
        _logger.info(f'Training in distributed mode, process {args.rank} of {args.world_size}, device {device}.')
    random_seed(args.seed, args.rank)
    try:
        run(args, given, device, ctx)
    except (ValueError, FileNotFoundError, timm_drnet.UnsafeCheckpointError) as e:
        _logger.error(cli.error_message(e, parser))
        sys.exit(2)
    except drnet_train.TrainingInterrupted as e:
        if ctx.primary:
            _logger.warning(f'Training {e}; checkpoint {e.checkpoint}. ' + (
                f'Continue with: train.py --resume {e.checkpoint}.' if e.resumable else 'Run it again to start over.'))
        sys.exit(128 + signal.SIGTERM)
    except drnet_train.CheckpointWriteError as e:
        _logger.error(f'Training stopped: {e}. Free space or fix the folder, then resume.')
        sys.exit(1)
    except drnet_train.NonFiniteLossError as e:
        _logger.error(f'Training stopped: {cli.error_message(e, parser)}')
        sys.exit(1)
    drnet_train.barrier(ctx)
    if args.distributed:
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()

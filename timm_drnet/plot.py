""" Figures

The accuracy-against-cost chart of one evaluation (static resolutions, random routing, the DRNet, the oracle), the
grid of example images per chosen resolution (the paper's Figure 4), and the chart of a benchmark report
(``benchmarks/imagenette.py``).
matplotlib is imported on first use (``pip install "timm-drnet[plots]"``).
"""
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from .costs import unit_label
from .evaluate import Example, routing_label

__all__ = ['plot_accuracy_vs_cost', 'plot_examples', 'plot_benchmark']


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError('Plots need matplotlib: pip install "timm-drnet[plots]"') from e
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_accuracy_vs_cost(summary: Dict[str, Any], path: Path) -> None:
    """Top-1 against cost per image: static resolutions (a curve), random router, DRNet, oracle."""
    plt = _pyplot()
    unit = unit_label(summary['cost_unit'])
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    static = summary['static']
    ax.plot([s['cost'] for s in static], [s['top1'] for s in static], 'o-', color='tab:gray', label='static')
    for s in static:
        ax.annotate(f'{s["resolution"]:g}x ({s["size"][0]} px)', (s['cost'], s['top1']), textcoords='offset points',
                    xytext=(4, -12), fontsize=8, color='tab:gray')
    rnd = summary.get('random')
    if rnd is not None:
        label = 'random at the same cost (static curve)' if rnd['kind'] == 'static_curve' else \
            f'random, DRNet shares ({len(rnd["seeds"])} seeds)'
        ax.errorbar([rnd['cost']], [rnd['top1_mean']], yerr=[rnd['top1_std']], fmt='s', color='tab:orange',
                    capsize=4, label=label)
    ax.plot([summary['drnet']['cost']], [summary['drnet']['top1']], '*', color='tab:red', markersize=15,
            label=routing_label(summary['drnet']['routing']))
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
    """One row per resolution: the images routed there most surely (predictor probability, or the cascade's stopping
    confidence), with the prediction."""
    plt = _pyplot()
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
            ax.set_xlabel(f'p({r:g}x)={e.score:.2f}' if e.score_name == 'p' else f'stop at {e.score:.2f}', fontsize=7)
    fig.suptitle('Images per chosen resolution (title: prediction and its probability, red = wrong)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_benchmark(report: Dict[str, Any], path: Path) -> None:
    """ Top-1 against GMACs of every model of a ``benchmarks/imagenette.py`` report: static curves, stage-1
    branches, cascade and predictor sweeps (random routing at matched GMACs is the curve of the routed model's own
    branches), the paper's stage 2, the oracle (the pretrained model without fine-tuning is far below: the table has
    it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.6))

    def curve(points, style, colour, label, **kw):
        points = sorted(points, key=lambda p: p['gmacs'])
        ax.plot([p['gmacs'] for p in points], [p['top1'] for p in points], style, c=colour, label=label, **kw)
    curve(report['static'], 's-', 'black', 'static, fine-tuned at 224 / 168 / 112 alone')
    curve(report['stage1'], '^--', 'tab:blue', 'stage 1 branches (= random routing over them)')
    curve(report['stage1_distilled'], '^-', 'tab:purple',
          f'stage 1 + {report["distill"]} distillation (= random routing over them)')
    curve(report['cascade'], 'v-', 'tab:cyan', 'distilled stage 1, confidence cascade 112 > 168 > 224')
    curve(report['cascade_112_224'], 'v--', 'teal', 'distilled stage 1, confidence cascade 112 > 224')
    curve(report['predictor'], 'D-', 'tab:red', 'distilled stage 1, predictor (per-resolution losses) sweep')
    curve(report['paper_frozen_sweep'], 'x--', 'tab:orange', 'distilled stage 1, paper\'s stage 2 predictor sweep')
    for key, marker, label in (('paper_frozen', 'P', 'paper stage 2, frozen backbone'),
                               ('paper_joint', 'X', 'paper stage 2, backbone joint')):
        p = report[key]
        ax.plot([p['gmacs']], [p['top1']], marker, ms=10, c='tab:brown' if key == 'paper_joint' else 'tab:orange',
                label=f'{label} (alpha {p["alpha"]:g})')
    o = report['oracle']
    ax.plot([o['gmacs']], [o['top1']], '*', ms=14, c='tab:green', label='oracle (distilled stage 1)')
    base = report['static_224']
    ax.axhline(base['top1'], color='black', lw=0.6, alpha=0.4)
    ax.axvline(0.5 * base['gmacs'], color='black', lw=0.6, alpha=0.4, ls=':')
    ax.set_xlabel('GMACs per image (predictor included where one runs)')
    ax.set_ylabel('top-1 %')
    ax.set_title('tf_efficientnet_lite0 on imagenette224 val + val_extra (3,791 images)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

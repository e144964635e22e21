""" Running train.py / validate.py the way users do, as subprocesses, with tiny settings. """
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

REPO = Path(__file__).resolve().parent.parent

# a tiny run: the default small DRNet on a few synthetic images, one epoch per stage, no loader workers
TINY = ['--synthetic-samples', '64', '64', '-b', '32', '--multires-epochs', '1', '--epochs', '1',
        '--workers', '0', '--log-interval', '1']


def script_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    env.pop('WORLD_SIZE', None)
    return env


def run_script(script: str, args: Sequence[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``python <script> <args>`` from the repository root; stdout and stderr captured as text."""
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO, env=script_env(),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def error_lines(proc: subprocess.CompletedProcess) -> List[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]

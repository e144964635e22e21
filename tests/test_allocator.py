""" keep_freed_memory: page faults counted by the kernel (getrusage), in a fresh process per check, since the
setting is process-wide."""
import platform
import subprocess
import sys

import pytest

import timm_drnet

# median faults per round of allocating, writing and freeing an n-float tensor (one fault per 4 KiB page, 16384 for
# 64 MiB), after two rounds untimed, in a fresh process: before the call and after keep_freed_memory(). (After
# keep_freed_memory(False) the heap's blocks still serve what fits, so faults come back only for some layouts.)
_PROBE = r'''
import resource, statistics
import torch
import timm_drnet

def faults_per_round(n, rounds=6):
    for _ in range(2):
        torch.ones(n)
    faults = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.ones(n)  # allocated, every page written, freed
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return statistics.median(faults)

default = faults_per_round(16 * 2 ** 20)
timm_drnet.keep_freed_memory()
kept = faults_per_round(16 * 2 ** 20)
timm_drnet.keep_freed_memory(False)  # glibc's values back: no error
print(default, kept)
'''


GLIBC = sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'


@pytest.mark.slow  # a fresh process importing torch: about 5 s, kept out of the fast tier
@pytest.mark.skipif(not GLIBC, reason='keep_freed_memory needs glibc')
def test_freed_memory_is_reused_without_page_faults():
    out = subprocess.run([sys.executable, '-c', _PROBE], capture_output=True, text=True, check=True).stdout
    default, kept = map(float, out.split())
    pages = 16 * 2 ** 20 * 4 / 4096
    assert kept < 0.01 * pages  # the heap's pages are reused
    # each default round maps fresh pages: one fault per 4 KiB page, or per 2 MiB where the kernel gives huge pages
    assert default > 10 * max(kept, 1) and default >= pages / 512


@pytest.mark.skipif(GLIBC, reason='the error path is for systems without glibc')
def test_without_glibc_the_error_names_the_need():
    with pytest.raises(RuntimeError, match='glibc'):
        timm_drnet.keep_freed_memory()

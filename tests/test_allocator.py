""" keep_freed_memory: page faults counted by the kernel (getrusage), in a fresh process per check, since the
setting is process-wide."""
import platform
import subprocess
import sys

import pytest

import timm_drnet

# faults per round of allocating, touching and freeing a 64 MiB tensor (16384 pages of 4 KiB), measured in a fresh
# process before the call, after keep_freed_memory(), and after keep_freed_memory(False)
_PROBE = r'''
import resource, sys
import torch
import timm_drnet

def faults_per_round(rounds=4):
    torch.ones(16 * 2 ** 20)  # the first touch of the heap is not counted
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        torch.ones(16 * 2 ** 20)  # allocated, every page written, freed
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds

default = faults_per_round()
timm_drnet.keep_freed_memory()
kept = faults_per_round()
timm_drnet.keep_freed_memory(False)
print(default, kept, faults_per_round())
'''


GLIBC = sys.platform.startswith('linux') and platform.libc_ver()[0] == 'glibc'


@pytest.mark.skipif(not GLIBC, reason='keep_freed_memory needs glibc')
def test_freed_memory_is_reused_without_page_faults():
    out = subprocess.run([sys.executable, '-c', _PROBE], capture_output=True, text=True, check=True).stdout
    default, kept, restored = map(float, out.split())
    pages = 16 * 2 ** 20 * 4 / 4096
    assert kept < 0.01 * pages  # the heap's pages are reused
    # each default round maps fresh pages: one fault per 4 KiB page, or per 2 MiB where the kernel gives huge pages
    assert default > 10 * max(kept, 1) and default >= pages / 512
    assert restored > 10 * max(kept, 1) and restored >= pages / 512  # glibc's defaults back


@pytest.mark.skipif(GLIBC, reason='the error path is for systems without glibc')
def test_without_glibc_the_error_names_the_need():
    with pytest.raises(RuntimeError, match='glibc'):
        timm_drnet.keep_freed_memory()

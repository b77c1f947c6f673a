#!/usr/bin/env python3
"""convert.py FILE.cu — the .cu source as C++ for emu.h: cuda_int.cuh becomes emu.h, the
dynamic shared array a pointer to the block's emulated shared memory, and every
kernel<<<grid, block, smem, stream>>>(args); an emu_launch of a lambda."""
import re
import sys

s = open(sys.argv[1]).read()
s = s.replace('#include "backend/cuda/cuda_int.cuh"', '#include "emu.h"')
s = re.sub(r'extern __shared__ float (\w+)\[\];', r'float *\1 = emu_smem();', s)


def launch(m):
    cfg = [x.strip() for x in m.group(2).split(',')]
    if len(cfg) != 4:
        sys.exit('convert.py: launch needs grid, block, smem, stream: ' + m.group(0))
    return 'emu_launch(%s, %s, %s, [&]() { %s(%s); });' % (cfg[0], cfg[1], cfg[2], m.group(1),
                                                           m.group(3))


s, n = re.subn(r'([A-Za-z_]\w*(?:<\w+>)?)<<<(.*?)>>>\((.*?)\);', launch, s, flags=re.S)
if n == 0:
    sys.exit('convert.py: no kernel launch found')
sys.stdout.write(s)

#!/usr/bin/env python3
"""convert.py FILE.cu — the .cu source as C++ for the emulator (emu.h):

- #include "backend/cuda/cuda_int.cuh" becomes #include "emu.h" (which includes it back, on
  the emulator's runtime);
- the dynamic shared array (extern __shared__ [__align__(N)] T x[];) a pointer to the block's emulated
  shared memory, T *x = (T *)emu_smem();
- every static __shared__ array (__shared__ T a[8][33], b[32];) a reference to per-block
  storage: static emu_site s; T (&a)[8][33] = emu_shared<T[8][33]>(s); …
- every kernel<<<grid, block, smem, stream>>>(args); a check of its pointer arguments
  (emu_check_args: device memory) and an emu_launch of a lambda that calls the kernel, which
  runs every block before it returns.

Line numbers are kept (#line and no added lines), so compiler errors and CU_CHECK's
__FILE__:__LINE__ name the .cu file. A file without kernels (cuda_mem.cu, shim.cu) passes
through with its include replaced."""
import re
import sys

path = sys.argv[1]
s = open(path).read()
s = s.replace('#include "backend/cuda/cuda_int.cuh"', '#include "emu.h"')

# dynamic shared memory
s = re.sub(r'extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?(\w+)\s+(\w+)\s*\[\s*\]\s*;',
           r'\1 *\2 = (\1 *)emu_smem();', s)

# static shared arrays: one emu_site per array (a static of the kernel, or of each of its
# template instances), the storage looked up per block
def split_top(text):
    """split a declarator list at the commas outside brackets"""
    parts, depth, cur = [], 0, ''
    for ch in text:
        if ch in '([':
            depth += 1
        elif ch in ')]':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur)
            cur = ''
        else:
            cur += ch
    return parts + [cur]


def shared(m):
    typ, decls = m.group(1), m.group(2)
    out = []
    for d in split_top(decls):
        d = d.strip()
        dm = re.fullmatch(r'(\w+)\s*((?:\[[^\]]+\]\s*)+)', d)
        if not dm:
            sys.exit('convert.py: %s: cannot convert __shared__ %s %s' % (path, typ, d))
        name, dims = dm.group(1), re.sub(r'\s+', '', dm.group(2))
        out.append('static emu_site emu_site_%s; %s (&%s)%s = emu_shared<%s%s>(emu_site_%s);'
                   % (name, typ, name, dims, typ, dims, name))
    return ' '.join(out)


s = re.sub(r'(?<!extern )__shared__\s+(\w+)\s+([^;]+);', shared, s)


def launch(m):
    cfg = split_top(m.group(2))
    if len(cfg) != 4:
        sys.exit('convert.py: %s: a launch needs grid, block, smem, stream: %s'
                 % (path, m.group(0)))
    cfg = [x.strip() for x in cfg]
    kernel = m.group(1)
    call = ('do { emu_check_args(emu_kernel_id(&%s), %s); '
            'emu_launch(emu_kernel_id(&%s), %s, %s, %s, %s, [&]() { %s(%s); }); } while (0);' % (
                kernel, m.group(3), kernel, cfg[0], cfg[1], cfg[2], cfg[3], kernel, m.group(3)))
    # keep the line count: the newlines of the launch go after it (inside a #define they
    # stay escaped)
    nl = m.group(0).count('\n')
    return call + (' \\\n' if '\\\n' in m.group(0) else '\n') * nl if nl else call


s = re.sub(r'([A-Za-z_]\w*(?:<[\w ,]+>)?)<<<(.*?)>>>\((.*?)\);', launch, s, flags=re.S)
if '<<<' in s or re.search(r'\b__shared__\b', s):
    sys.exit('convert.py: %s: a launch or __shared__ left unconverted' % path)
sys.stdout.write('#line 1 "%s"\n' % path + s)

#!/usr/bin/python3
"""ABI check (b): free.h compiles on its own as strict C99 and C11 and as C++11 (and
C++17), with every warning an error, and its declarations link as C (extern "C").

usage: check-header.py SOURCE_INCLUDE_DIR BUILD_INCLUDE_DIR (the latter has version.h)"""
import os
import shutil
import subprocess
import sys
import tempfile

PROGRAM = '''#include <free/free.h>
#include <free/free.h> /* twice: the include guard works */
int main(void)
{
    free_ctx_params p;
    free_step_info info;
    (void)info;
    return free_ctx_params_init(&p, sizeof p) == FREE_OK ? 0 : 1;
}
'''

C_STRICT = ['-Werror', '-Wall', '-Wextra', '-pedantic', '-Wshadow', '-Wstrict-prototypes',
            '-Wmissing-prototypes', '-Wconversion', '-Wsign-conversion', '-Wundef']
CXX_STRICT = ['-Werror', '-Wall', '-Wextra', '-pedantic', '-Wshadow', '-Wold-style-cast',
              '-Wzero-as-null-pointer-constant', '-Wundef']


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    inc = ['-I', sys.argv[1], '-I', sys.argv[2]]
    cc = os.environ.get('CC', 'cc').split()
    cxx = os.environ.get('CXX', 'c++').split()
    jobs = [(cc, 'c', ['-std=c99'] + C_STRICT),
            (cc, 'c', ['-std=c11'] + C_STRICT),
            (cxx, 'c++', ['-std=c++11'] + CXX_STRICT),
            (cxx, 'c++', ['-std=c++17'] + CXX_STRICT)]
    failed = skipped = 0
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, 'header.c')
        with open(src, 'w') as f:
            f.write(PROGRAM)
        for compiler, lang, flags in jobs:
            if not shutil.which(compiler[0]):
                print(f'SKIP {compiler[0]} is not installed')
                skipped += 1
                continue
            cmd = compiler + ['-x', lang] + flags + inc + ['-c', src, '-o',
                                                           os.path.join(tmp, 'h.o')]
            r = subprocess.run(cmd, capture_output=True, text=True)
            print(('ok   ' if r.returncode == 0 else 'FAIL ') + ' '.join(cmd))
            if r.returncode != 0:
                print(r.stdout + r.stderr)
                failed += 1
    if failed:
        return 1
    return 77 if skipped == len(jobs) else 0


if __name__ == '__main__':
    sys.exit(main())

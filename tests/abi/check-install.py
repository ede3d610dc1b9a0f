#!/usr/bin/python3
"""ABI check (e): `meson install --destdir` into a temporary directory, then a small
program is compiled against the installed header with `pkg-config --cflags --libs free`
(PKG_CONFIG_SYSROOT_DIR pointing into the destdir) and run with LD_LIBRARY_PATH, checking
that it really loaded the installed library; it also decodes a few tokens with the
committed stories260K fixture (tests/data). Then the Python binding, copied out of the
source tree, must find the installed library through pkg-config, and LIBFREE_PATH must
still win.

usage: check-install.py BUILD_DIR"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

PROGRAM = r'''#include <free/free.h>
#include <stdio.h>
#include <string.h>

static int on_token(void *user, int32_t token, const char *piece, size_t len,
                    const free_step_info *info)
{
    (void)token; (void)info;
    *(int *)user += 1;
    fwrite(piece, 1, len, stdout);
    return 0;
}

int main(int argc, char **argv)
{
    free_model *m = NULL;
    if (strcmp(free_version_string(), FREE_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", FREE_VERSION_STRING, free_version_string());
        return 1;
    }
    if (free_model_load("/nonexistent.gguf", NULL, &m) != FREE_ERR_IO || !free_last_error()[0])
        return 1;
    if (argc > 1) {
        free_ctx *ctx;
        free_ctx_params p;
        int n = 0;
        if (free_model_load(argv[1], NULL, &m) != FREE_OK) {
            fprintf(stderr, "%s\n", free_last_error());
            return 1;
        }
        free_ctx_params_init(&p, sizeof p);
        p.n_ctx = 64;
        if (free_ctx_create(m, &p, &ctx) != FREE_OK ||
            free_decode(ctx, "Once upon a time", -1, 8, on_token, &n) != FREE_OK || n == 0)
            return 1;
        printf("\n");
        free_ctx_destroy(ctx);
        free_model_destroy(m);
    }
    printf("installed libfree %s works\n", free_version_string());
    return 0;
}
'''


def run(cmd, **kw):
    print('+', ' '.join(cmd))
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    build = sys.argv[1]
    if not shutil.which('pkg-config'):
        print('SKIP: pkg-config is not installed')
        return 77
    with tempfile.TemporaryDirectory(prefix='libfree-install-') as tmp:
        dest = os.path.join(tmp, 'root')
        run(['meson', 'install', '-C', build, '--destdir', dest, '--no-rebuild', '--quiet'])
        pcs = glob.glob(os.path.join(dest, '**', 'pkgconfig', 'free.pc'), recursive=True)
        if len(pcs) != 1:
            print(f'FAIL: expected one free.pc under {dest}, found {pcs}')
            return 1
        headers = glob.glob(os.path.join(dest, '**', 'include', 'free', '*.h*'), recursive=True)
        names = sorted(os.path.basename(h) for h in headers)
        print('installed headers:', ', '.join(names))
        if 'free.hpp' not in names:
            print('FAIL: free.hpp (the C++ wrapper) is not installed')
            return 1
        docs = glob.glob(os.path.join(dest, '**', 'doc', 'libfree', '*.md'), recursive=True)
        doc_names = sorted(os.path.basename(d) for d in docs)
        print('installed docs:', ', '.join(doc_names))
        if not {'api.md', 'guide.md', 'python.md', 'README.md'} <= set(doc_names):
            print('FAIL: the documentation is not installed')
            return 1
        env = dict(os.environ)
        env['PKG_CONFIG_PATH'] = os.path.dirname(pcs[0])
        env['PKG_CONFIG_SYSROOT_DIR'] = dest
        flags = run(['pkg-config', '--cflags', '--libs', 'free'], env=env).split()
        print('pkg-config:', ' '.join(flags))
        # Nothing of the library's own dependencies leaks into a user's flags.
        cflags = run(['pkg-config', '--cflags', 'free'], env=env).split()
        if [f for f in cflags if 'blas' in f.lower() or f.startswith('-I') and
                dest not in f]:
            print('FAIL: pkg-config --cflags free leaks other include dirs:', cflags)
            return 1
        if not any(f.startswith('-I' + dest) for f in flags):
            print('FAIL: pkg-config --cflags does not point into the destdir')
            return 1
        src = os.path.join(tmp, 'prog.c')
        exe = os.path.join(tmp, 'prog')
        with open(src, 'w') as f:
            f.write(PROGRAM)
        cc = os.environ.get('CC', 'cc').split()
        run(cc + ['-std=c99', '-Wall', '-Wextra', '-pedantic', '-Werror', src, '-o', exe]
            + flags)
        # The installed C++ wrapper compiles on its own.
        cxx = os.environ.get('CXX', 'c++').split()
        if shutil.which(cxx[0]):
            hpp = os.path.join(tmp, 'hpp.cpp')
            with open(hpp, 'w') as f:
                f.write('#include <free/free.hpp>\nint main() { return 0; }\n')
            run(cxx + ['-std=c++17', '-fsyntax-only', hpp] +
                [f for f in flags if f.startswith('-I')])
        libdirs = [f[2:] for f in flags if f.startswith('-L')]
        env = dict(os.environ)
        env['LD_LIBRARY_PATH'] = ':'.join(libdirs)
        ldd = run(['ldd', exe], env=env)
        line = [l for l in ldd.splitlines() if 'libfree' in l]
        print('ldd:', line)
        if not line or dest not in line[0]:
            print('FAIL: the program did not resolve libfree from the destdir')
            return 1
        args = [exe]
        model = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'data',
                             'stories260K', 'stories260K.gguf')
        if os.path.exists(model):
            args.append(model)
        print(run(args, env=env))
        return check_python(build, dest, pcs[0], tmp)


def check_python(build, dest, pc, tmp):
    """The Python binding, copied out of the source tree, finds the installed library
    through pkg-config by itself; LIBFREE_PATH still wins."""
    source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    python = '/usr/bin/python3'
    if not os.path.exists(python):
        print('python binding: SKIP (no /usr/bin/python3)')
        return 0
    site = os.path.join(tmp, 'site')
    shutil.copytree(os.path.join(source, 'bindings', 'python', 'libfree'),
                    os.path.join(site, 'libfree'))
    # The destdir stands for the prefix: free.pc as it would read if installed there.
    pcdir = os.path.join(tmp, 'pc')
    os.makedirs(pcdir)
    with open(pc) as f:
        lines = f.read().splitlines()
    with open(os.path.join(pcdir, 'free.pc'), 'w') as f:
        for line in lines:
            if line.startswith('prefix='):
                line = 'prefix=' + dest + line[len('prefix='):]
            f.write(line + '\n')
    env = {k: v for k, v in os.environ.items()
           if k not in ('LIBFREE_PATH', 'FREE_BUILD_DIR', 'LD_LIBRARY_PATH')}
    env['PYTHONPATH'] = site
    env['PKG_CONFIG_PATH'] = pcdir
    env.pop('PKG_CONFIG_SYSROOT_DIR', None)
    probe = 'import libfree; from libfree import _ffi; print(_ffi.lib()._name, libfree.version())'
    out = run([python, '-c', probe], env=env, cwd=tmp).split()
    print('python binding via pkg-config:', ' '.join(out))
    if not out or not out[0].startswith(dest):
        print('FAIL: the Python binding did not load the installed library')
        return 1
    built = os.path.join(build, 'lib', 'libfree.so.0')
    env['LIBFREE_PATH'] = built
    out = run([python, '-c', probe], env=env, cwd=tmp).split()
    print('python binding with LIBFREE_PATH:', ' '.join(out))
    if not out or out[0] != built:
        print('FAIL: LIBFREE_PATH did not win over pkg-config')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())

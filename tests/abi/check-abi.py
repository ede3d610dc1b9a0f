#!/usr/bin/python3
"""ABI check (c): compares a libfree.so built with debug information against the
committed baseline tests/abi/libfree.abi (abidw XML) with abidiff.

Passes when nothing changed, or when the only change is added functions (a compatible
addition; docs/abi.md says when to refresh the baseline). Fails on removed or changed
functions, changed types (struct layout, enum values, ...) and changed symbol versions.
Exits 77 (skipped) when abidiff/abidw (Debian: abigail-tools) are not installed.

usage: check-abi.py LIBFREE.SO BASELINE.abi HEADERS_DIR [--update]
  --update rewrites the baseline from LIBFREE.SO (at a release, see docs/abi.md)."""
import shutil
import subprocess
import sys

ABIDW_FLAGS = ['--no-corpus-path', '--no-comp-dir-path', '--no-show-locs',
               '--drop-private-types', '--exported-interfaces-only', '--drop-undefined-syms']


def main():
    args = [a for a in sys.argv[1:] if a != '--update']
    update = len(args) != len(sys.argv) - 1
    if len(args) != 3:
        print(__doc__)
        return 2
    lib, baseline, headers = args
    if not shutil.which('abidiff') or not shutil.which('abidw'):
        print('SKIP: abidiff/abidw not installed (Debian package abigail-tools)')
        return 77
    if update:
        subprocess.run(['abidw'] + ABIDW_FLAGS + ['--headers-dir', headers, '--out-file',
                                                  baseline, lib], check=True)
        print(f'wrote {baseline}')
        return 0
    # No --headers-dir2: the baseline has no locations, and abidiff would then filter out
    # changes to public structs. Private types were dropped from the baseline instead.
    cmd = ['abidiff', '--fail-no-debug-info', baseline, lib]
    r = subprocess.run(cmd, capture_output=True, text=True)
    print(' '.join(cmd))
    print(r.stdout + r.stderr)
    if r.returncode & 3:
        print('FAIL: abidiff could not compare (exit %d)' % r.returncode)
        return 1
    if r.returncode & 8:
        print('FAIL: incompatible ABI change (removed or changed symbols)')
        return 1
    if r.returncode & 4:
        r2 = subprocess.run(cmd[:1] + ['--no-added-syms'] + cmd[1:], capture_output=True,
                            text=True)
        if r2.returncode != 0:
            print('FAIL: the ABI changed beyond added functions (see above). If the change '
                  'is intended and compatible (fields appended to a size-versioned struct), '
                  'update the baseline as docs/abi.md describes.')
            return 1
        print('ok: only added functions; refresh the baseline at the release (docs/abi.md)')
        return 0
    print('ok: no ABI change against the baseline')
    return 0


if __name__ == '__main__':
    sys.exit(main())

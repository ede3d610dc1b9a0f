#!/usr/bin/python3
"""ABI check (d): one version everywhere. meson's project version, the FREE_VERSION_*
macros of the generated version.h, free_version_string() / free_version_number() of the
built library, and a "## [X.Y.Z]" entry in CHANGELOG.md must all agree.

usage: check-version.py LIBFREE.SO MESON_VERSION VERSION.H CHANGELOG.md"""
import ctypes
import os
import re
import sys


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        return 2
    lib, meson_version, version_h, changelog = sys.argv[1:]
    problems = []
    m = re.fullmatch(r'(\d+)\.(\d+)\.(\d+)', meson_version)
    if not m:
        print(f'FAIL: meson project version {meson_version!r} is not MAJOR.MINOR.PATCH')
        return 1
    major, minor, patch = (int(x) for x in m.groups())
    number = major * 10000 + minor * 100 + patch

    text = open(version_h).read()
    macros = dict(re.findall(r'#define[ \t]+(FREE_VERSION_\w+)[ \t]+([^\n]+)', text))
    want = {'FREE_VERSION_MAJOR': str(major), 'FREE_VERSION_MINOR': str(minor),
            'FREE_VERSION_PATCH': str(patch), 'FREE_VERSION_STRING': f'"{meson_version}"'}
    for name, value in want.items():
        if macros.get(name, '').strip() != value:
            problems.append(f'{version_h}: {name} is {macros.get(name)!r}, expected {value}')

    expr = macros.get('FREE_VERSION_NUMBER', '')
    for name in ('FREE_VERSION_MAJOR', 'FREE_VERSION_MINOR', 'FREE_VERSION_PATCH'):
        expr = expr.replace(name, macros.get(name, 'None'))
    if not re.fullmatch(r'[\d\s()*+]+', expr) or eval(expr) != number:
        problems.append(f'{version_h}: FREE_VERSION_NUMBER is {expr!r}, expected {number}')

    so = ctypes.CDLL(os.path.abspath(lib))
    so.free_version_string.restype = ctypes.c_char_p
    so.free_version_number.restype = ctypes.c_uint32
    got_s = so.free_version_string().decode()
    got_n = so.free_version_number()
    if got_s != meson_version:
        problems.append(f'free_version_string() is {got_s!r}, meson says {meson_version!r}')
    if got_n != number:
        problems.append(f'free_version_number() is {got_n}, expected {number}')

    if not os.path.exists(changelog):
        problems.append(f'{changelog} does not exist (it needs a "## [{meson_version}]" entry)')
    else:
        heads = re.findall(r'^## \[([^\]]+)\]', open(changelog).read(), flags=re.M)
        if meson_version not in heads:
            problems.append(f'{changelog} has no "## [{meson_version}]" entry '
                            f'(entries: {", ".join(heads) or "none"})')
    for p in problems:
        print('FAIL', p)
    print(f'version {meson_version} ({number}); library says {got_s} ({got_n})')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())

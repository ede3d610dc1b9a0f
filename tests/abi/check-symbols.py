#!/usr/bin/python3
"""ABI check (a): the dynamic symbols libfree.so defines are exactly the names of
lib/libfree.map, and those are exactly the functions free.h declares with FREE_API.

usage: check-symbols.py LIBFREE.SO LIBFREE.MAP FREE.H"""
import re
import subprocess
import sys


def exported(lib):
    out = subprocess.run(['nm', '-D', '--defined-only', lib], check=True,
                         capture_output=True, text=True).stdout
    names, nodes = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        kind, name = parts[-2], parts[-1].split('@')[0]
        if kind == 'A':          # a version node (LIBFREE_0.1), not a symbol
            nodes.add(name)
        else:
            names.add(name)
    return names, nodes


def map_names(path):
    text = re.sub(r'/\*.*?\*/', '', open(path).read(), flags=re.S)
    nodes = re.findall(r'([\w.]+)\s*\{', text)
    names = set()
    for block in re.findall(r'global\s*:(.*?)(?:local\s*:|\})', text, flags=re.S):
        names.update(n for n in re.findall(r'([\w*]+)\s*;', block) if '*' not in n)
    return names, nodes


def header_functions(path):
    text = re.sub(r'/\*.*?\*/', '', open(path).read(), flags=re.S)
    text = re.sub(r'//[^\n]*', '', text)
    return set(re.findall(r'\bFREE_API\b[^;{]*?\b(free_\w+)\s*\(', text))


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    lib, mapfile, header = sys.argv[1:]
    syms, lib_nodes = exported(lib)
    mapped, map_nodes = map_names(mapfile)
    declared = header_functions(header)
    problems = []

    def diff(a, b, what):
        for n in sorted(a - b):
            problems.append(f'{n}: {what}')

    diff(syms, mapped, f'exported by {lib} but not listed in {mapfile}')
    diff(mapped, syms, f'listed in {mapfile} but not exported (missing definition?)')
    diff(declared, syms, f'declared FREE_API in {header} but not exported')
    diff(syms, declared, f'exported but not declared in {header}')
    for n in sorted(syms):
        if not n.startswith('free_'):
            problems.append(f'{n}: exported name without the free_ prefix')
    for node in map_nodes:
        if not re.fullmatch(r'LIBFREE_\d+\.\d+', node):
            problems.append(f'{mapfile}: version node {node} is not LIBFREE_<major>.<minor>')
    missing_nodes = set(map_nodes) - lib_nodes
    for node in sorted(missing_nodes):
        problems.append(f'{lib}: version node {node} of the map is not in the library')
    for p in problems:
        print('FAIL', p)
    print(f'{len(syms)} exported, {len(mapped)} in the map, {len(declared)} declared; '
          f'nodes {", ".join(map_nodes)}')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/python3
"""Keeps docs/api.md in step with include/free/free.h (meson test --suite docs).

Fails, listing every problem, when docs/api.md
  - lacks a FREE_API function of the header (it must appear in a heading or a code block),
  - lacks a field of a public struct in that struct's table (the first table after a
    heading naming the struct), or lists a field the struct does not have,
  - gives a default that differs from the struct's *_init function in lib/ (when the
    table has a "default" column),
  - lacks an enum constant, or has no table row pairing it with its pinned value,
  - names a free_* / FREE_* identifier, or a struct field (free_x.field), that the header
    (or free/version.h.in) does not declare.

usage: check-api-doc.py SOURCE_ROOT [API_MD]   (API_MD defaults to SOURCE_ROOT/docs/api.md)
Standard library only."""
import glob
import os
import re
import sys

WORD = r'(?<![\w])%s(?![\w])'


def strip_comments(text):
    """Removes /* */ and // comments, keeping string and character literals intact."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('/*', i):
            j = text.find('*/', i + 2)
            i = n if j < 0 else j + 2
            out.append(' ')
        elif text.startswith('//', i):
            j = text.find('\n', i)
            i = n if j < 0 else j
        elif c in '"\'':
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == '\\' else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def strip_preprocessor(code):
    """Drops preprocessor lines (with their continuations)."""
    out, cont = [], False
    for line in code.split('\n'):
        if cont or line.lstrip().startswith('#'):
            cont = line.rstrip().endswith('\\')
            continue
        out.append(line)
    return '\n'.join(out)


def parse_int(s):
    s = s.strip().rstrip('uUlL')
    try:
        return int(s, 0)
    except ValueError:
        return None


def parse_header(path):
    code = strip_comments(open(path, encoding='utf-8').read())
    body = strip_preprocessor(code)
    functions = []
    for decl in re.findall(r'\bFREE_API\b([^;{]*)', body):
        m = re.search(r'(\w+)\s*\(', decl)
        if m:
            functions.append(m.group(1))
    structs = {}
    for name, inner, tdef in re.findall(
            r'typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;', body, flags=re.S):
        fields = []
        for decl in inner.split(';'):
            decl = ' '.join(decl.split())
            if not decl:
                continue
            m = re.search(r'\(\s*\*\s*(\w+)\s*\)', decl)     # a function pointer field
            if m:
                fields.append(m.group(1))
                continue
            decl = re.sub(r'\[[^\]]*\]', '', decl)           # array sizes
            parts = decl.split(',')
            first = re.findall(r'\w+', parts[0])
            if first:
                fields.append(first[-1])
            for p in parts[1:]:
                ids = re.findall(r'\w+', p)
                if ids:
                    fields.append(ids[0])
        structs[tdef or name] = fields
    enums = {}
    for name, inner, tdef in re.findall(
            r'typedef\s+enum\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;', body, flags=re.S):
        value = -1
        consts = []
        for item in inner.split(','):
            item = item.strip()
            if not item:
                continue
            cname, _, expr = item.partition('=')
            cname = cname.strip()
            if expr:
                value = parse_int(expr)
            elif value is not None:
                value += 1
            consts.append((cname, value))
        enums[tdef or name] = consts
    lower = set(re.findall(r'\bfree_[a-z0-9_]+\b', code))
    upper = set(re.findall(r'\bFREE_[A-Z0-9_]+\b', code))
    return functions, structs, enums, lower, upper


def split_cells(row):
    row = row.strip()
    if row.startswith('|'):
        row = row[1:]
    if row.endswith('|') and not row.endswith('\\|'):
        row = row[:-1]
    return [c.strip().replace('\\|', '|') for c in re.split(r'(?<!\\)\|', row)]


def parse_doc(path):
    """Returns headings [(line_no, level, text)], code text, tables [(line_no, rows)]
    and all lines; code blocks are excluded from headings and tables."""
    lines = open(path, encoding='utf-8').read().split('\n')
    headings, code, tables = [], [], []
    in_code, table = False, None
    for i, line in enumerate(lines):
        if line.lstrip().startswith('```'):
            in_code = not in_code
            table = None
            continue
        if in_code:
            code.append(line)
            continue
        m = re.match(r'(#{1,6})\s+(.*)', line)
        if m:
            headings.append((i, len(m.group(1)), m.group(2)))
        if line.lstrip().startswith('|'):
            if table is None:
                table = (i, [])
                tables.append(table)
            table[1].append(split_cells(line))
        else:
            table = None
    return headings, '\n'.join(code), tables, lines


def struct_table(name, headings, tables):
    """The first table under a heading that names the struct, before the next heading."""
    for k, (line, _, text) in enumerate(headings):
        if not re.search(WORD % re.escape(name), text):
            continue
        end = headings[k + 1][0] if k + 1 < len(headings) else float('inf')
        for tline, rows in tables:
            if line < tline < end and len(rows) >= 2:
                return rows
    return None


def init_defaults(root, struct):
    """Assignments p->field = value in FREE_API ... <struct>_init(...) { ... } in lib/*.c,
    or None when no such function exists."""
    for path in sorted(glob.glob(os.path.join(root, 'lib', '*.c'))):
        code = strip_comments(open(path, encoding='utf-8').read())
        m = re.search(r'\b%s_init\s*\([^)]*\)\s*\{' % re.escape(struct), code)
        if not m:
            continue
        depth, i = 1, m.end()
        while i < len(code) and depth:
            depth += {'{': 1, '}': -1}.get(code[i], 0)
            i += 1
        body = code[m.end():i]
        return dict(re.findall(r'\b\w+->(\w+)\s*=\s*([^;]+);', body))
    return None


def numbers(text):
    out = []
    for tok in re.findall(r'(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])', text):
        out.append(float(tok))
    return out


def check_default(field, expect, cell):
    """None when cell states expect, else a description of the problem."""
    if expect is None:                               # left at zero by the memset
        if 0.0 in numbers(cell) or re.search(WORD % 'NULL', cell):
            return None
        return f'the default is 0 / NULL (not set by the init function), the table says "{cell}"'
    value = expect.strip()
    num = re.fullmatch(r'(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)[fFuUlL]*', value)
    if num:
        want = float(num.group(1))
        if any(abs(v - want) <= 1e-9 * max(1.0, abs(want)) for v in numbers(cell)):
            return None
        return f'the init function sets {value}, the table says "{cell}"'
    if re.fullmatch(r'\w+', value):
        if re.search(WORD % re.escape(value), cell):
            return None
        return f'the init function sets {value}, the table says "{cell}"'
    return None                                      # an expression: not checked


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__)
        return 2
    root = sys.argv[1]
    header = os.path.join(root, 'include', 'free', 'free.h')
    doc = sys.argv[2] if len(sys.argv) == 3 else os.path.join(root, 'docs', 'api.md')
    functions, structs, enums, lower, upper = parse_header(header)
    version_in = os.path.join(root, 'include', 'free', 'version.h.in')
    if os.path.exists(version_in):
        upper |= set(re.findall(r'#\s*define\s+(FREE_\w+)', open(version_in).read()))
    if not functions or not structs or not enums:
        print(f'api-doc: could not parse {header}: {len(functions)} functions, '
              f'{len(structs)} structs, {len(enums)} enums')
        return 1
    headings, code, tables, lines = parse_doc(doc)
    text = '\n'.join(lines)
    heading_text = '\n'.join(h[2] for h in headings)
    problems = []

    for f in functions:
        pat = WORD % re.escape(f)
        if not re.search(pat, heading_text) and not re.search(pat, code):
            where = 'mentioned only in prose' if re.search(pat, text) else 'missing'
            problems.append(f'function {f}: {where}; it needs a heading or a code block '
                            f'with its signature')

    n_fields = 0
    for name, fields in sorted(structs.items()):
        n_fields += len(fields)
        rows = struct_table(name, headings, tables)
        if rows is None:
            problems.append(f'struct {name}: no table under a heading naming it')
            continue
        head, body = rows[0], [r for r in rows[1:] if not all(
            re.fullmatch(r':?-+:?', c) for c in r if c)]
        documented = {}
        for r in body:
            for ident in re.findall(r'`(\w+)`', r[0]):
                documented[ident] = r
        for f in fields:
            if f not in documented:
                problems.append(f'struct {name}: field {f} is not in its table')
        for f in documented:
            if f not in fields:
                problems.append(f'struct {name}: the table lists {f}, which the struct in '
                                f'free.h does not have')
        col = next((i for i, c in enumerate(head) if 'default' in c.lower()), None)
        defaults = init_defaults(root, name) if col is not None else None
        if defaults is None:
            continue
        for f in fields:
            if f == 'size' or f not in documented:
                continue
            r = documented[f]
            cell = r[col] if col < len(r) else ''
            why = check_default(f, defaults.get(f), cell)
            if why:
                problems.append(f'struct {name}: field {f}: {why}')

    n_consts = 0
    for name, consts in sorted(enums.items()):
        for cname, value in consts:
            n_consts += 1
            if not re.search(WORD % re.escape(cname), text):
                problems.append(f'enum {name}: constant {cname} is missing')
                continue
            if value is None:
                continue
            paired = False
            for _, rows in tables:
                for r in rows:
                    cells = [c.strip('`') for c in r]
                    if cname in cells and any(parse_int(c) == value for c in cells):
                        paired = True
            if not paired:
                problems.append(f'enum {name}: no table row gives {cname} its pinned value '
                                f'{value}')

    for ident in sorted(set(re.findall(r'\bfree_[a-z0-9_]+\b', text)) - lower):
        problems.append(f'{ident} is mentioned but free.h does not declare it')
    for ident in sorted(set(re.findall(r'\bFREE_[A-Z0-9_]+\b', text)) - upper):
        problems.append(f'{ident} is mentioned but free.h / version.h.in do not define it')
    for sname, field in sorted(set(re.findall(r'\b(free_[a-z0-9_]+)(?:\.|->)(\w+)', text))):
        if sname in structs and field not in structs[sname]:
            problems.append(f'{sname}.{field} is mentioned but {sname} has no field {field}')

    rel = os.path.relpath(doc, root) if doc.startswith(root) else doc
    if problems:
        print(f'api-doc: {rel} is out of step with include/free/free.h '
              f'({len(problems)} problem{"s" if len(problems) > 1 else ""}):')
        for p in problems:
            print('  - ' + p)
        return 1
    print(f'api-doc: {rel} documents all {len(functions)} functions, {n_fields} fields of '
          f'{len(structs)} structs and {n_consts} constants of {len(enums)} enums of '
          f'include/free/free.h')
    return 0


if __name__ == '__main__':
    sys.exit(main())

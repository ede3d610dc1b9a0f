"""A small GGUF v2/v3 reader and writer for free-train.

The reader keeps every metadata value with its GGUF type, so that a file can be written
back with the same keys, types and order (free-train's output keeps the input's layout).
Tensors come back dequantized to float32 numpy arrays shaped reversed(ne) (rows x cols for
a matrix, as W @ x expects). The writer writes F32 and F16 tensors, or raw bytes.
"""

import struct

import numpy as np

import dequant

# GGUF metadata value types.
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32 = range(7)
BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(7, 13)
_FMT = {UINT8: "B", INT8: "b", UINT16: "H", INT16: "h", UINT32: "I", INT32: "i",
        FLOAT32: "f", BOOL: "?", UINT64: "Q", INT64: "q", FLOAT64: "d"}

DEFAULT_ALIGNMENT = 32


class GGUFError(ValueError):
    pass


class Value:
    """A typed metadata value: vtype, value, and for arrays the element type."""
    __slots__ = ("vtype", "value", "etype")

    def __init__(self, vtype, value, etype=None):
        self.vtype, self.value, self.etype = vtype, value, etype

    def __repr__(self):
        return f"Value({self.vtype}, {self.value!r}, {self.etype})"


class Tensor:
    __slots__ = ("name", "ne", "type", "offset")

    def __init__(self, name, ne, ggml_type, offset):
        self.name, self.ne, self.type, self.offset = name, list(ne), ggml_type, offset

    @property
    def n_elements(self):
        n = 1
        for d in self.ne:
            n *= d
        return n

    @property
    def shape(self):
        return tuple(reversed(self.ne))


class _Cursor:
    def __init__(self, buf, path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n, what):
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError(f"{self.path}: {what}: {n} bytes at offset {self.pos} run past "
                            f"the end of the file (size {len(self.buf)})")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(out)

    def scalar(self, vtype, what):
        fmt = "<" + _FMT[vtype]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what):
        n = self.scalar(UINT64, what + " length")
        return self.take(n, what).decode("utf-8", errors="surrogateescape")

    def value(self, vtype, what):
        if vtype in _FMT:
            return Value(vtype, self.scalar(vtype, what))
        if vtype == STRING:
            return Value(STRING, self.string(what))
        if vtype == ARRAY:
            etype = self.scalar(UINT32, what + " element type")
            n = self.scalar(UINT64, what + " element count")
            if etype in _FMT:
                size = struct.calcsize(_FMT[etype])
                raw = self.take(n * size, what)
                return Value(ARRAY, list(struct.unpack("<%d%s" % (n, _FMT[etype]), raw)),
                             etype)
            if etype == STRING:
                return Value(ARRAY, [self.string(f"{what}[{i}]") for i in range(n)], etype)
            raise GGUFError(f"{self.path}: {what}: arrays of type {etype} are not supported")
        raise GGUFError(f"{self.path}: {what}: unknown value type {vtype}")


class Reader:
    """Header, typed metadata (self.kv: dict key -> Value, in file order) and tensor
    directory (self.tensors: dict name -> Tensor, in file order)."""

    def __init__(self, path):
        self.path = str(path)
        try:
            self.mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise GGUFError(f"{self.path}: cannot read: {e}") from None
        cur = _Cursor(self.mm, self.path)
        magic = cur.take(4, "magic")
        if magic != b"GGUF":
            raise GGUFError(f"{self.path}: not a GGUF file (magic {magic!r})")
        self.version = cur.scalar(UINT32, "version")
        if self.version not in (2, 3):
            raise GGUFError(f"{self.path}: GGUF version {self.version} is not 2 or 3")
        n_tensors = cur.scalar(UINT64, "tensor count")
        n_kv = cur.scalar(UINT64, "metadata count")
        if n_kv > len(self.mm) or n_tensors > len(self.mm):
            raise GGUFError(f"{self.path}: implausible counts ({n_kv} keys, "
                            f"{n_tensors} tensors)")
        self.kv = {}
        for i in range(n_kv):
            key = cur.string(f"key {i}")
            vtype = cur.scalar(UINT32, f"key {key} type")
            self.kv[key] = cur.value(vtype, f"key {key}")
        self.tensors = {}
        for i in range(n_tensors):
            name = cur.string(f"tensor {i} name")
            n_dims = cur.scalar(UINT32, f"tensor {name} n_dims")
            if not 1 <= n_dims <= 4:
                raise GGUFError(f"{self.path}: tensor {name}: {n_dims} dimensions")
            ne = [cur.scalar(UINT64, f"tensor {name} ne") for _ in range(n_dims)]
            ggml_type = cur.scalar(UINT32, f"tensor {name} type")
            offset = cur.scalar(UINT64, f"tensor {name} offset")
            self.tensors[name] = Tensor(name, ne, ggml_type, offset)
        self.alignment = int(self.get("general.alignment", DEFAULT_ALIGNMENT))
        if self.alignment <= 0 or self.alignment & (self.alignment - 1):
            raise GGUFError(f"{self.path}: general.alignment {self.alignment} is not a "
                            f"power of two")
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        for t in self.tensors.values():
            try:
                size = dequant.n_bytes(t.type, t.n_elements)
            except ValueError as e:
                raise GGUFError(f"{self.path}: tensor {t.name}: {e}") from None
            end = self.data_offset + t.offset + size
            if end > len(self.mm):
                raise GGUFError(f"{self.path}: tensor {t.name}: data ends at {end}, past "
                                f"the end of the file (size {len(self.mm)})")

    def get(self, key, default=None):
        v = self.kv.get(key)
        return default if v is None else v.value

    def raw(self, name):
        """The tensor's bytes as stored."""
        t = self.tensors[name]
        start = self.data_offset + t.offset
        return np.asarray(self.mm[start:start + dequant.n_bytes(t.type, t.n_elements)])

    def tensor(self, name):
        """The tensor as float32, shaped reversed(ne)."""
        t = self.tensors[name]
        try:
            flat = dequant.dequantize(self.raw(name), t.type, t.n_elements)
        except ValueError as e:
            raise GGUFError(f"{self.path}: tensor {name}: {e}") from None
        return flat.reshape(t.shape)


# -- writing ------------------------------------------------------------------------------

def _pack_string(s):
    b = s.encode("utf-8", errors="surrogateescape")
    return struct.pack("<Q", len(b)) + b


def _pack_value(v):
    if v.vtype in _FMT:
        return struct.pack("<" + _FMT[v.vtype], v.value)
    if v.vtype == STRING:
        return _pack_string(v.value)
    if v.vtype == ARRAY:
        head = struct.pack("<IQ", v.etype, len(v.value))
        if v.etype in _FMT:
            return head + struct.pack("<%d%s" % (len(v.value), _FMT[v.etype]), *v.value)
        if v.etype == STRING:
            return head + b"".join(_pack_string(s) for s in v.value)
    raise GGUFError(f"cannot write a value of type {v.vtype}")


class OutTensor:
    """A tensor to write: name, shape (rows x cols, i.e. reversed ne), ggml type and the
    bytes of its data."""
    __slots__ = ("name", "ne", "type", "data")

    def __init__(self, name, ne, ggml_type, data):
        self.name, self.ne, self.type, self.data = name, list(ne), ggml_type, data


def tensor_from_array(name, array, ggml_type):
    """An OutTensor holding a float array as F32 or F16 (ne = reversed shape)."""
    a = np.asarray(array, dtype=np.float32)
    if ggml_type == dequant.F32:
        data = a.astype("<f4").tobytes()
    elif ggml_type == dequant.F16:
        if np.any(np.abs(a[np.isfinite(a)]) > 65504.0):
            raise GGUFError(f"tensor {name}: values beyond the F16 range; write F32")
        data = a.astype("<f2").tobytes()
    else:
        raise GGUFError(f"tensor {name}: can only write F32 or F16, not "
                        f"{dequant.type_name(ggml_type)}")
    return OutTensor(name, list(reversed(a.shape)), ggml_type, data)


def write(path, kv, tensors, version=3):
    """Writes a GGUF file: kv is a list of (key, Value), tensors a list of OutTensor."""
    alignment = DEFAULT_ALIGNMENT
    for key, v in kv:
        if key == "general.alignment":
            alignment = int(v.value)
    parts = [struct.pack("<4sIQQ", b"GGUF", version, len(tensors), len(kv))]
    for key, v in kv:
        parts.append(_pack_string(key) + struct.pack("<I", v.vtype) + _pack_value(v))
    offset = 0
    offsets = []
    for t in tensors:
        offsets.append(offset)
        parts.append(_pack_string(t.name) + struct.pack("<I", len(t.ne)) +
                     struct.pack("<%dQ" % len(t.ne), *t.ne) +
                     struct.pack("<IQ", t.type, offset))
        offset += -(-len(t.data) // alignment) * alignment
    head = b"".join(parts)
    with open(path, "wb") as f:
        f.write(head)
        f.write(b"\0" * (-len(head) % alignment))
        for t in tensors:
            f.write(t.data)
            f.write(b"\0" * (-len(t.data) % alignment))

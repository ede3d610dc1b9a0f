"""A minimal, independent GGUF v2/v3 reader for the NumPy reference forward pass.

Written from the GGUF format description, sharing nothing with libfree's C loader, so
that the two can check each other. Tensor data is read through np.memmap; a tensor with
ne = [ne0, ne1] (ggml order, ne0 fastest) comes back as an array shaped [ne1, ne0], i.e.
rows x cols, which is what W @ x expects for a ggml matrix of ne0 inputs and ne1 outputs.
"""

import struct

import numpy as np

GGUF_MAGIC = b"GGUF"

# GGUF metadata value types.
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32 = range(7)
T_BOOL, T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(7, 13)

_SCALAR_FORMATS = {
    T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h", T_UINT32: "<I",
    T_INT32: "<i", T_FLOAT32: "<f", T_BOOL: "<?", T_UINT64: "<Q", T_INT64: "<q",
    T_FLOAT64: "<d",
}

# ggml tensor types this reader understands.
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8
GGML_TYPE_NAMES = {GGML_F32: "F32", GGML_F16: "F16", GGML_Q8_0: "Q8_0"}
Q8_0_BLOCK = 32
Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK


class GGUFError(ValueError):
    pass


class TensorInfo:
    __slots__ = ("name", "ne", "type", "offset")

    def __init__(self, name, ne, ggml_type, offset):
        self.name, self.ne, self.type, self.offset = name, ne, ggml_type, offset

    @property
    def n_elements(self):
        n = 1
        for d in self.ne:
            n *= d
        return n

    @property
    def n_bytes(self):
        if self.type == GGML_F32:
            return 4 * self.n_elements
        if self.type == GGML_F16:
            return 2 * self.n_elements
        if self.type == GGML_Q8_0:
            return self.n_elements // Q8_0_BLOCK * Q8_0_BLOCK_BYTES
        raise GGUFError(f"tensor {self.name}: unsupported ggml type {self.type}")

    def __repr__(self):
        tname = GGML_TYPE_NAMES.get(self.type, str(self.type))
        return f"TensorInfo({self.name!r}, ne={self.ne}, {tname}, offset={self.offset})"


class _Cursor:
    """Reads little-endian values from a bytes-like object, checking every bound."""

    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n, what):
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError(f"{what}: {n} bytes at offset {self.pos} run past the end of "
                            f"the file (size {len(self.buf)})")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return bytes(out)

    def scalar(self, vtype, what):
        fmt = _SCALAR_FORMATS[vtype]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def u32(self, what):
        return self.scalar(T_UINT32, what)

    def u64(self, what):
        return self.scalar(T_UINT64, what)

    def string(self, what):
        n = self.u64(what + " length")
        return self.take(n, what).decode("utf-8", errors="surrogateescape")

    def value(self, vtype, what):
        if vtype in _SCALAR_FORMATS:
            return self.scalar(vtype, what)
        if vtype == T_STRING:
            return self.string(what)
        if vtype == T_ARRAY:
            etype = self.u32(what + " element type")
            n = self.u64(what + " element count")
            if etype in _SCALAR_FORMATS:
                size = struct.calcsize(_SCALAR_FORMATS[etype])
                raw = self.take(n * size, what)
                return list(struct.unpack("<%d%s" % (n, _SCALAR_FORMATS[etype][1]), raw))
            return [self.value(etype, f"{what}[{i}]") for i in range(n)]
        raise GGUFError(f"{what}: unknown value type {vtype}")


class GGUFReader:
    """Parses the header, metadata and tensor directory; maps the data lazily."""

    def __init__(self, path):
        self.path = str(path)
        self.mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        cur = _Cursor(self.mm)
        magic = cur.take(4, "magic")
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (magic {magic!r})")
        self.version = cur.u32("version")
        if self.version not in (2, 3):
            raise GGUFError(f"{self.path}: GGUF version {self.version} is not 2 or 3")
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("metadata count")

        self.kv = {}
        for i in range(n_kv):
            key = cur.string(f"key {i}")
            vtype = cur.u32(f"key {key} type")
            self.kv[key] = cur.value(vtype, f"key {key}")

        self.tensors = {}
        for i in range(n_tensors):
            name = cur.string(f"tensor {i} name")
            n_dims = cur.u32(f"tensor {name} n_dims")
            if n_dims > 4:
                raise GGUFError(f"tensor {name}: {n_dims} dimensions")
            ne = [cur.u64(f"tensor {name} ne") for _ in range(n_dims)]
            ggml_type = cur.u32(f"tensor {name} type")
            offset = cur.u64(f"tensor {name} offset")
            self.tensors[name] = TensorInfo(name, ne, ggml_type, offset)

        self.alignment = int(self.kv.get("general.alignment", 32))
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        for t in self.tensors.values():
            end = self.data_offset + t.offset + t.n_bytes
            if end > len(self.mm):
                raise GGUFError(f"tensor {t.name}: data ends at {end}, past the end of the "
                                f"file (size {len(self.mm)})")

    def get(self, key, default=None):
        return self.kv.get(key, default)

    def tensor(self, name, dtype=np.float32):
        """The tensor as a dense array of `dtype`, shaped reversed(ne) ([ne1, ne0] for
        a matrix). F16 and Q8_0 are dequantized exactly (to float32, then `dtype`)."""
        t = self.tensors[name]
        start = self.data_offset + t.offset
        raw = self.mm[start:start + t.n_bytes]
        shape = tuple(reversed(t.ne)) if t.ne else (1,)
        if t.type == GGML_F32:
            arr = raw.view("<f4")
        elif t.type == GGML_F16:
            arr = raw.view("<f2").astype(np.float32)
        elif t.type == GGML_Q8_0:
            blocks = np.asarray(raw).reshape(-1, Q8_0_BLOCK_BYTES)
            d = blocks[:, :2].copy().view("<f2").astype(np.float32)
            q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
            arr = (q * d).reshape(-1)
        else:
            raise GGUFError(f"tensor {name}: unsupported ggml type {t.type}")
        return np.asarray(arr, dtype=dtype).reshape(shape)

    def close(self):
        # np.memmap has no close; dropping the reference unmaps it.
        self.mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

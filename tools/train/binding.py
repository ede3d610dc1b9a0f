"""libfree from free-train: the Python binding (bindings/python, ctypes over libfree.so),
used to tokenize exactly as inference does and to check the PyTorch forward pass against
libfree's logits."""

import pathlib
import sys

import numpy as np
import torch

SOURCE_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent


def import_libfree():
    """The libfree package: installed, or the source tree's bindings/python (which finds
    the library in build/lib, or through LIBFREE_PATH / FREE_BUILD_DIR)."""
    try:
        import libfree
        return libfree
    except ImportError:
        pass
    sys.path.insert(0, str(SOURCE_ROOT / "bindings" / "python"))
    import libfree
    return libfree


def vocab(path):
    """A vocabulary-only libfree.Model of a GGUF file (tokenize / detokenize)."""
    return import_libfree().Model(str(path), vocab_only=True)


def libfree_logits(path, prompts, exit_layer=None):
    """libfree's full-depth logits (float32 [n, V]) for each token list in prompts; with
    exit_layer, pairs (logits, exit-head logits after exit_layer blocks) from
    free_eval_exit."""
    libfree = import_libfree()
    from ctypes import POINTER, c_float, c_int32
    out = []
    with libfree.Model(str(path)) as m:
        for ids in prompts:
            params = dict(n_ctx=max(len(ids), 8), n_threads=1)
            if exit_layer is None:
                with m.context(**params) as ctx:
                    out.append(ctx.eval(list(ids)))
                continue
            with m.context(exit_layer=exit_layer, **params) as ctx:
                n = len(ids)
                full = np.zeros((n, m.n_vocab), np.float32)
                shallow = np.zeros((n, m.n_vocab), np.float32)
                arr = (c_int32 * n)(*[int(t) for t in ids])
                lib = libfree._ffi.lib()
                st = lib.free_eval_exit(ctx.handle, arr, n,
                                        full.ctypes.data_as(POINTER(c_float)),
                                        shallow.ctypes.data_as(POINTER(c_float)), None)
                if st != 0:
                    raise libfree.FreeError(st, "free_eval_exit failed", "free_eval_exit")
                out.append((full, shallow))
    return out


@torch.no_grad()
def torch_logits(model, ids, device="cpu", exit_layer=None):
    """The PyTorch model's full-depth logits [n, V] for one token list; with exit_layer,
    the pair (full, shallow-exit logits)."""
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64)[None, :], device=device)
    if exit_layer is None:
        (h,) = model(x, [model.hp.n_layers])
        return model.head(h)[0].float().cpu().numpy()
    h_s, h_d = model(x, [exit_layer, model.hp.n_layers])
    return (model.head(h_d)[0].float().cpu().numpy(),
            model.head(h_s)[0].float().cpu().numpy())


def relative_error(a, ref):
    """max |a - ref| / max |ref|."""
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-30))


def compare(model, path, prompts, device="cpu", exit_layer=None):
    """The largest relative error between the PyTorch forward and libfree over prompts
    (full depth, and the exit head after exit_layer blocks when given)."""
    worst = 0.0
    for ids, ref in zip(prompts, libfree_logits(path, prompts, exit_layer)):
        got = torch_logits(model, ids, device, exit_layer)
        if exit_layer is None:
            got, ref = (got,), (ref,)
        for g, r in zip(got, ref):
            worst = max(worst, relative_error(g, r))
    return worst

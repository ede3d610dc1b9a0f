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


def libfree_logits(path, prompts):
    """libfree's full-depth logits (float32 [n, V]) for each token list in prompts."""
    libfree = import_libfree()
    out = []
    with libfree.Model(str(path)) as m:
        for ids in prompts:
            with m.context(n_ctx=max(len(ids), 8), n_threads=1) as ctx:
                out.append(ctx.eval(list(ids)))
    return out


@torch.no_grad()
def torch_logits(model, ids, device="cpu"):
    """The PyTorch model's full-depth logits [n, V] for one token list."""
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64)[None, :], device=device)
    (h,) = model(x, [model.hp.n_layers])
    return model.head(h)[0].float().cpu().numpy()


def relative_error(a, ref):
    """max |a - ref| / max |ref|."""
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-30))


def compare(model, path, prompts, device="cpu"):
    """The largest relative error between the PyTorch forward and libfree over prompts."""
    worst = 0.0
    for ids, ref in zip(prompts, libfree_logits(path, prompts)):
        worst = max(worst, relative_error(torch_logits(model, ids, device), ref))
    return worst

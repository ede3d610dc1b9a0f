"""FREE's shallow-deep objective, and the held-out statistics written into the output.

    loss = (Ls * CE_shallow + L * CE_deep) / (Ls + L) + kd * MSE(n(h_Ls), n(h_L).detach())

CE_shallow reads the hidden state after Ls blocks through the same final norm and LM head
as the deep exit (what libfree's exit does); n() scales each hidden vector to unit RMS, so
the distillation compares directions, not the residual stream's growing magnitude.
"""

import torch
import torch.nn.functional as F

# Thresholds of the calibration curve (free.calib.thresholds); libfree exits when the
# shallow softmax's top-1 minus top-2 probability is greater than the threshold.
CALIB_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def _unit_rms(h):
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)


def shallow_deep_loss(model, batch, exit_layer, shallow_weight, kd):
    """batch [B, T + 1] int64 -> (loss, dict of detached floats)."""
    x, y = batch[:, :-1], batch[:, 1:]
    h_s, h_d = model(x, [exit_layer, model.hp.n_layers])
    v = model.hp.n_vocab
    ce_s = F.cross_entropy(model.head(h_s).float().reshape(-1, v), y.reshape(-1))
    ce_d = F.cross_entropy(model.head(h_d).float().reshape(-1, v), y.reshape(-1))
    mse = F.mse_loss(_unit_rms(h_s.float()), _unit_rms(h_d.float()).detach())
    loss = shallow_weight * ce_s + (1.0 - shallow_weight) * ce_d + kd * mse
    return loss, {"ce_shallow": ce_s.item(), "ce_deep": ce_d.item(), "kd": mse.item()}


@torch.no_grad()
def evaluate(model, windows, exit_layer, device, batch=8):
    """Held-out statistics over windows [n, T + 1]: losses at both exits, argmax agreement,
    and the calibration curve (exit rate and agreement of the exited tokens per
    threshold). None when there are no windows."""
    if len(windows) == 0:
        return None
    was_training = model.training
    model.eval()
    n_tok, sum_s, sum_d, agree = 0, 0.0, 0.0, 0
    confs, agrees = [], []
    for i in range(0, len(windows), batch):
        w = torch.as_tensor(windows[i:i + batch], device=device)
        x, y = w[:, :-1], w[:, 1:].reshape(-1)
        h_s, h_d = model(x, [exit_layer, model.hp.n_layers])
        ls = model.head(h_s).float().reshape(-1, model.hp.n_vocab)
        ld = model.head(h_d).float().reshape(-1, model.hp.n_vocab)
        sum_s += F.cross_entropy(ls, y, reduction="sum").item()
        sum_d += F.cross_entropy(ld, y, reduction="sum").item()
        top2 = torch.softmax(ls, dim=-1).topk(2, dim=-1)
        conf = top2.values[:, 0] - top2.values[:, 1]
        same = top2.indices[:, 0] == ld.argmax(-1)
        agree += int(same.sum())
        n_tok += y.numel()
        confs.append(conf.cpu())
        agrees.append(same.cpu())
    model.train(was_training)
    conf = torch.cat(confs)
    same = torch.cat(agrees)
    rates, agreements = [], []
    for t in CALIB_THRESHOLDS:
        exits = conf > t
        n = int(exits.sum())
        rates.append(n / n_tok)
        # No exited token: nothing disagrees (recorded as 1).
        agreements.append(float(same[exits].float().mean()) if n else 1.0)
    return {"tokens": n_tok, "loss_shallow": sum_s / n_tok, "loss_deep": sum_d / n_tok,
            "agreement": agree / n_tok, "thresholds": list(CALIB_THRESHOLDS),
            "exit_rate": rates, "calib_agreement": agreements}

"""Runtimes that execute artifacts here, behind the same call as a PyTorch model: normalised NCHW float32 in,
logits (or labels) out, as torch tensors. Shared by export parity, eval and bench."""

"""Attention-aware INT8 policies: the vocabulary (which ops stay float everywhere, and why); each backend declares
its own ``Int8Policy`` (``edgeseg.backends.<name>``): which ops it runs in int8.

Measured on this kind of machine (see the README's INT8 section): quantizing Softmax or the linear-attention
normaliser collapses the output (2 dB SNR on a test model); quantizing EfficientViT's attention MatMuls in ONNX
Runtime broke the output even with the pad-free normaliser; Conv-only int8 kept it and was the fastest.
"""

from __future__ import annotations

from dataclasses import dataclass

# Float in every policy: attention cores, normalisers and what follows the logits.
ALWAYS_FLOAT = {
    "MatMul": "linear-attention products (k^T v, q (k^T v)): their int8 ranges span the token sums",
    "Softmax": "over ~1k tokens int8 collapses the distribution",
    "Div": "the attention normaliser: a quotient of two accumulations",
    "ReduceSum": "the normaliser's token sum",
    "LayerNormalization": "variance over channels overflows int8 ranges (FQ-ViT)",
    "Resize": "final upsampling of logits: an int8 step would shift class boundaries",
    "ArgMax": "labels",
}


@dataclass(frozen=True)
class Int8Policy:
    backend: str
    quantize_op_types: tuple[str, ...]
    activation_symmetric: bool  # TensorRT needs zero point 0
    activation_type: str  # "uint8" | "int8"
    weights: str = "int8, symmetric, per output channel"
    note: str = ""

    def float_op_types(self) -> dict[str, str]:
        return {op: why for op, why in ALWAYS_FLOAT.items() if op not in self.quantize_op_types}

    def as_dict(self) -> dict:
        return {
            "backend": self.backend,
            "int8_ops": list(self.quantize_op_types),
            "float_ops": self.float_op_types(),
            "activations": f"{self.activation_type}, {'symmetric' if self.activation_symmetric else 'asymmetric'}",
            "weights": self.weights,
            "note": self.note,
        }


# litert-torch's PT2E quantizer (used for TFLite and Core ML) makes these int8; matmul, div and sum stay float.
PT2E_INT8_OPS = ("Conv", "Add", "Mul", "Concat")

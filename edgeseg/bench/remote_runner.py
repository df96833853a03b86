"""edgeseg's on-device runner for .onnx and .tflite: copied next to the model and run with the device's python.

Self-contained on purpose (standard library + numpy + the runtime): the device needs neither edgeseg nor torch.
It times the runtime's own inference call on a fixed random input (prepared once), and prints one line
``EDGESEG-BENCH {json}`` with every sample, the runtime and its version; statistics are computed by the caller.

    python3 remote_runner.py model.onnx --warmup 10 --runs 50 --threads 4
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

MARKER = "EDGESEG-BENCH "


def _onnx(path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # spinning threads would steal cores from anything else timed on the device
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([int(d) for d in inp.shape]).astype(np.float32)
    out = sess.get_outputs()[0].name
    return (lambda: sess.run([out], {inp.name: x})), f"onnxruntime {ort.__version__} (CPU)"


def _tflite(path, threads):
    try:
        from ai_edge_litert.interpreter import Interpreter

        name = "ai-edge-litert"
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter

            name = "tflite-runtime"
        except ImportError:
            from tensorflow.lite import Interpreter

            name = "tensorflow.lite"
    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = np.random.default_rng(0).standard_normal(d["shape"]).astype(np.float32)
    if d["dtype"] != np.float32:  # fully int8 models take int8 with a scale and zero point
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(d["dtype"])
    index = d["index"]

    def run():
        it.set_tensor(index, x)
        it.invoke()

    return run, f"{name} (XNNPACK)"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args(argv)
    make = _onnx if args.model.endswith(".onnx") else _tflite
    run, runtime = make(args.model, args.threads)
    for _ in range(args.warmup):
        run()
    samples = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        run()
        samples.append(1000.0 * (time.perf_counter() - t0))
    result = {
        "runtime": runtime,
        "threads": args.threads,
        "warmup": args.warmup,
        "samples_ms": samples,
        "machine": {
            "platform": platform.platform(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
    }
    print(MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

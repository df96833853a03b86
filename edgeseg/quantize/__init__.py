"""INT8: calibration sets from real data and attention-aware quantization policies per backend."""

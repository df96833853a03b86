"""Latency estimates for devices that are not attached: a graph-level roofline (``graph``, ``roofline``) with
efficiency factors calibrated on measurements (``calibrate``). Every result is labelled "estimate"."""

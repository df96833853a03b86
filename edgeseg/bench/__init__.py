"""Benchmarks on device profiles: profiles (YAML), latency statistics, measurement here (host), over SSH and over
adb, and the bench reports (JSON, Markdown, self-contained HTML). ``edgeseg.pipeline.bench`` ties them together."""

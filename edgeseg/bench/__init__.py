"""Benchmarks on device profiles: profiles (YAML), latency statistics, measurement here (host), over SSH and over
adb (``device``: reaching a profile's device), and the bench reports (JSON, Markdown, self-contained HTML).
``edgeseg.commands.bench`` ties them together."""

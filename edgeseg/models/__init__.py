"""Model families as plugins (as timm's model files are): one package per family under ``edgeseg/models/``.

A family package holds its reference model (``model.py``), its deploy rewrites (``rewrites.py``) and, in its
``__init__.py``, ``register()``: it adds the family's model entries to ``edgeseg.models.registry.MODELS`` and its
rewrites (with the shared ones from ``edgeseg.rewrite.common`` it declares for itself) to
``edgeseg.rewrite.REWRITES``. Importing anything under ``edgeseg.models`` imports this module, which registers
every family in ``FAMILIES``, in that order (the order ``edgeseg models`` lists them).

A new family = one new package under ``edgeseg/models/`` with a ``register()``, plus one line in ``FAMILIES``.
"""

import importlib

FAMILIES = (
    "efficientvit",
    "lvt",
    "segformer",
)

for _family in FAMILIES:
    importlib.import_module(f"edgeseg.models.{_family}").register()

# --model PATH.py:NAME / package.module:NAME: the registry reaches the user-model loader through this hook
importlib.import_module("edgeseg.models.registry").install_user_loader(importlib.import_module("edgeseg.models.user"))

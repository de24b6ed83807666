"""exitflow's pure-PyTorch layer. Importing it imports every module of the package, so each
method's exit modules register themselves (``models/registry.py``): a new method adds its
module here and nothing else (``tasks.caching`` knows this package imports all of its modules)."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

"""exitflow's pure-PyTorch layer. Importing it registers every method's exit modules
(``models/registry.py``): one line per method module below."""

from models import berxit, consistentee  # noqa: F401  (registers lte / policy scorers and criteria)

"""exitflow's pure-PyTorch layer. Importing it registers every method's exit modules
(``models/registry.py``): one line per method module below."""

from models import berxit, consistentee, leco, past_future  # noqa: F401  (lte / policy scorers and criteria; the leco exit stack
#                                                          and cobee criterion; the past_future exit stack)

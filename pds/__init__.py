"""PDS: Prototype-guided Data Synthesis, a learning-free multimodal dataset distillation method."""

import warnings

__version__ = "0.1.0"

# In a Jupyter kernel without ipywidgets, the first import of tqdm.auto (by pds, open_clip, diffusers, transformers)
# warns that widgets are missing and falls back to the text bar, which is the bar pds wants: keep that one warning
# out of the notebooks (it is filtered here because `from pds import ...` runs before any of those imports).
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")

"""PDS: Prototype-guided Data Synthesis, a learning-free multimodal dataset distillation method."""

__version__ = "0.1.0"

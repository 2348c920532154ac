"""circuitry: how post-training changes the internal circuitry of language models."""

__version__ = "0.1.0"

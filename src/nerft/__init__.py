"""nerft: fine-tune chat LLMs for named-entity recognition with LLaMA-Factory."""

__version__ = "0.1.0"

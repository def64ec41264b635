"""med-r1: GRPO reasoning fine-tuning for medical vision-language models, on TRL."""

__version__ = "0.1.0"

"""Language models: any transformers causal LM behind the ``LanguageModel`` contract."""

from vlmkit.llm.transformers_lm import TransformersCausalLM

__all__ = ["TransformersCausalLM"]

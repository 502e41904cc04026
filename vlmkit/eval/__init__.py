"""Evaluation: prompts, few-shot composition, metrics and benchmark readers."""

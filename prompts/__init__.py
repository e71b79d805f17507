"""Packaged prompt templates (data files), importable as rag._prompts."""

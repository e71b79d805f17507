"""Evaluation: retrieval quality on BEIR data sets and answer quality on SQuAD-format data."""

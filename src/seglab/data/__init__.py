"""Datasets and the DataModule that serves them."""

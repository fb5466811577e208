"""Datasets, the DataModules that serve them, and the tools that check and look at them."""

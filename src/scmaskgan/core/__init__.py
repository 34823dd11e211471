"""Shared vocabulary of every layer: the parameters of each step, matrices (dense copies, library sizes, log-normalisation) and versions."""

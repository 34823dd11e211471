"""Measurements of a run: QC, the paper's imputation metrics, MCV-based evaluation, false signal, cross-sample integration, simulations."""

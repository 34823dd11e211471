"""The pipeline: one function per step (files in, files out), the embedded runner, the imputed AnnData and the HTML report."""

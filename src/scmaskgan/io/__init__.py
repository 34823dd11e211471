"""Files in and out: count readers and writers, h5ad, the samplesheet, the demo data, atomic writes and the results layout (file names and the DAG)."""

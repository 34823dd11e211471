#!/usr/bin/env python3
"""Write the tiny real-data test set of ``-profile test`` into ``assets/test/``.

Two samples of 150 real PBMCs each (scanpy's ``pbmc68k_reduced``, counts recovered by
:func:`scmaskgan.io.demo_data.pbmc_counts`), in the two ways users bring labels:

* ``pbmc_a.h5ad``: cells x genes counts with an obs column ``cell_type``;
* ``pbmc_b.csv.gz``: a GEO-style genes x cells table, labels in ``pbmc_b_labels.csv``
  (columns ``cell,label``).

The cells are a seeded random draw, so the files are the same on every run.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

from scmaskgan.io.demo_data import pbmc_counts

OUT = Path(__file__).resolve().parents[1] / "assets" / "test"
N_CELLS = 150


def main() -> int:
    """Write the test samples and their samplesheet; returns the exit code."""
    adata = pbmc_counts()
    order = np.random.default_rng(0).permutation(adata.n_obs)
    a = adata[np.sort(order[:N_CELLS])].copy()
    b = adata[np.sort(order[N_CELLS : 2 * N_CELLS])].copy()
    OUT.mkdir(parents=True, exist_ok=True)

    a.write_h5ad(OUT / "pbmc_a.h5ad", compression="gzip")

    table = b.to_df().T.astype(int)  # genes x cells, integer counts
    with gzip.GzipFile(OUT / "pbmc_b.csv.gz", "wb", mtime=0) as handle:  # mtime=0: same bytes every run
        handle.write(table.to_csv(index_label="gene").encode())
    b.obs["cell_type"].rename("label").rename_axis("cell").to_csv(OUT / "pbmc_b_labels.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())

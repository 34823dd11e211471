"""scMASKGAN: masked, attention-augmented, label-conditioned GAN imputation of scRNA-seq dropouts.

Python API (scanpy style)::

    import scmaskgan
    scmaskgan.impute(adata, label_key="cell_type")      # fills adata in place
    model = scmaskgan.ScMaskGAN(random_state=0).fit(adata)
    imputed = model.transform(adata)
"""

from __future__ import annotations

from scmaskgan.core.versions import VERSION as __version__

__all__ = ["ScMaskGAN", "__version__", "impute"]

#: Public names served lazily from :mod:`scmaskgan.api` (importing it pulls in torch,
#: which the CLI's light commands should not pay for).
_API = ("ScMaskGAN", "impute")


def __getattr__(name: str) -> object:
    if name in _API:
        from scmaskgan import api

        return getattr(api, name)
    raise AttributeError(f"module 'scmaskgan' has no attribute {name!r}")

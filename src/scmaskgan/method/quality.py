"""Generative quality: how well candidate cells stand for real cells of their label.

Candidates are compared with real cells the generator never saw (held-out cells), label
by label, and every score comes with the level that real cells reach: the training cells
scored against the same held-out cells. A generator is as good as real data when its
scores reach that level. All inputs are cells x genes in the encoded unit scale (numpy
arrays or CPU torch tensors); :class:`QualityReference` is built once from the held-out
and training cells and then scores any number of candidate sets (e.g. every epoch).

The scores (per label, and overall as the mean over labels weighted by held-out cells):

* ``energy``: energy distance ``2E|X-Y| - E|X-X'| - E|Y-Y'|`` to the held-out cells, in the
  reference's PCA (the same components as the k-NN scores); ``energy_real`` is the floor,
  ``energy_gap`` the distance above it, and :func:`gap_closed` how much of the initial gap
  training closed. Not on all genes: there a cell's distance to any other is mostly the
  independent sampling noise of hundreds of genes, and the distance cannot see co-expression
  (Zeisel mouse brain, 3,005 cells x 1,000 genes: real cells with every gene shuffled among
  their label's cells score 0.010 on all genes against 0.001 for real cells, but 0.236
  against 0.006 in 30 components). NaN for a label with fewer than two held-out cells
  (its within-sample term is undefined);
* ``precision``, ``recall`` (Kynkäänniemi et al. 2019), ``density`` and ``coverage``
  (Naeem et al. 2020): k-nearest-neighbour manifold estimates (k = 5) in a PCA of the real
  cells; precision and density measure realism, recall and coverage diversity (low for
  candidates collapsed onto their label's profile);
* ``c2st_auc``: classifier two-sample test, the cross-validated ROC AUC of a linear
  discriminant telling candidates from held-out cells (balanced per label) on the PCA
  scores relative to their label's centre and on their squares (so a difference in spread
  is found as well as one in location); 0.5 means indistinguishable, 1 fully separable.
  One classifier serves all labels, so small labels do not each fit their own;
* ``gene_mean_abs_log2``, ``gene_var_abs_log2``: median over genes of ``|log2|`` of the
  candidates' per-gene mean and variance over the real ones; ``gene_var_log2`` the signed
  median (negative: candidates vary less than real cells);
* ``corr_agreement``: Pearson correlation between the upper triangles of the gene-gene
  correlation matrices of candidates and held-out cells, on the most variable genes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from scmaskgan.errors import InputError

#: Scores of :meth:`QualityReference.score`, each also reported for the training cells as ``{name}_real``.
SCORES: tuple[str, ...] = (
    "energy", "precision", "recall", "density", "coverage", "c2st_auc",
    "gene_mean_abs_log2", "gene_var_abs_log2", "gene_var_log2", "corr_agreement",
)


def gap_closed(gap: float, gap_at_init: float) -> float:
    """Share of the initial energy gap closed: ``1 - gap / gap_at_init`` (NaN if there was no gap).

    1 means the candidates are as close to the held-out cells as the training cells are;
    0 no better than at initialisation; negative worse.
    """
    return 1.0 - gap / gap_at_init if gap_at_init > 0 else float("nan")


def as_array(x: Any) -> np.ndarray:
    """A float64 numpy copy of cells x genes given as a numpy array or a (CPU or device) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"expected cells x genes (2 dimensions), got shape {x.shape}")
    return x


# ------------------------------------------------------------------ distances
def pairwise_distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` and ``b`` (of ``a`` itself, diagonal 0, when None)."""
    same = b is None
    other = a if b is None else b
    sq = (a * a).sum(1)[:, None] + (other * other).sum(1)[None, :] - 2.0 * (a @ other.T)
    d = np.sqrt(np.clip(sq, 0.0, None))
    if same:
        np.fill_diagonal(d, 0.0)
    return d


def energy_distance(a: np.ndarray, b: np.ndarray, within_a: float | None = None) -> float:
    """Energy distance ``2 E|A-B| - E|A-A'| - E|B-B'|`` between two samples (rows).

    Within-sample means exclude each cell's distance to itself (U-statistics), so the
    distance is unbiased: about 0 for two samples of one distribution at any size.
    ``within_a``: ``E|A-A'|`` when the caller has it already (a reference scored against many sets).
    """
    within = _within(a) if within_a is None else within_a
    return float(2.0 * pairwise_distances(a, b).mean() - within - _within(b))


def _within(x: np.ndarray) -> float:
    """Mean distance between two different rows of ``x`` (0 for fewer than 2 rows)."""
    n = len(x)
    return float(pairwise_distances(x).sum() / (n * (n - 1))) if n > 1 else 0.0


def _kth_neighbour_radius(d_self: np.ndarray, k: int) -> np.ndarray:
    """Distance of every point to its k-th nearest other point (column 0 of a sorted row is itself)."""
    return np.partition(d_self, k, axis=1)[:, k]


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (k-NN manifolds).

    As ``compute_prdc`` of clovaai/generative-evaluation-prdc: each point's ball reaches its
    k-th nearest neighbour in its own set; precision is the share of fake points inside
    some real ball, recall the share of real points inside some fake ball (Kynkäänniemi
    et al. 2019); density the mean number of real balls holding a fake point over k, and
    coverage the share of real balls holding at least one fake point (Naeem et al. 2020).
    ``k`` is lowered to ``min(n_real, n_fake) - 1`` for small sets; NaN below 2 points.
    """
    k = min(k, len(real) - 1, len(fake) - 1)
    if k < 1:
        return dict.fromkeys(("precision", "recall", "density", "coverage"), float("nan"))
    real_radius = _kth_neighbour_radius(pairwise_distances(real), k)
    fake_radius = _kth_neighbour_radius(pairwise_distances(fake), k)
    d = pairwise_distances(real, fake)
    in_real_ball = d < real_radius[:, None]
    return {
        "precision": float(in_real_ball.any(axis=0).mean()),
        "recall": float((d < fake_radius[None, :]).any(axis=1).mean()),
        "density": float(in_real_ball.sum(axis=0).mean() / k),
        "coverage": float((d.min(axis=1) < real_radius).mean()),
    }


# ------------------------------------------------------------------ classifier two-sample test
def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the ``positive`` (bool) cells (Mann-Whitney U); NaN without both classes."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((rankdata(scores)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def discriminant_cv_scores(
    x: np.ndarray, fake: np.ndarray, *, folds: int = 5, ridge: float = 0.1, rng: np.random.Generator
) -> np.ndarray:
    """Out-of-fold scores of a linear (Fisher) discriminant telling ``fake`` (bool) rows from the others.

    The features are ``x`` standardised and their squares, so a difference in spread
    (e.g. candidates collapsed onto a mean) is found as well as one in location. On all
    folds but one, ``w = (S + ridge * mean variance * I)^-1 (mean_fake - mean_real)``
    (``S`` the pooled within-class covariance) scores the last one; the folds are seeded
    and stratified by class, at most ``folds`` and at most the smaller class size.
    """
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    x = np.hstack([x, x * x])
    n_folds = max(2, min(folds, int(fake.sum()), int((~fake).sum())))
    fold = np.empty(len(x), dtype=np.int64)
    for cls in (False, True):
        idx = np.flatnonzero(fake == cls)
        fold[idx] = rng.permutation(len(idx)) % n_folds
    scores = np.empty(len(x))
    for f in range(n_folds):
        test = fold == f
        xr, xf = x[~test & ~fake], x[~test & fake]
        centred = np.vstack([xr - xr.mean(0), xf - xf.mean(0)])
        cov = centred.T @ centred / max(len(centred) - 2, 1)
        cov[np.diag_indices_from(cov)] += ridge * max(float(np.trace(cov)) / len(cov), 1e-12)
        scores[test] = x[test] @ np.linalg.solve(cov, xf.mean(0) - xr.mean(0))
    return scores


def _balanced(n_real: int, n_fake: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded indices of equally many real and fake cells (the larger set subsampled)."""
    n = min(n_real, n_fake)
    return np.sort(rng.permutation(n_real)[:n]), np.sort(rng.permutation(n_fake)[:n])


def c2st_auc(real: np.ndarray, fake: np.ndarray, *, folds: int = 5, seed: int = 0) -> float:
    """Classifier two-sample test: cross-validated ROC AUC of telling ``fake`` from ``real``.

    The larger set is subsampled (seeded) to the size of the smaller one; the AUC is that
    of the out-of-fold scores of :func:`discriminant_cv_scores`. 0.5 means
    indistinguishable; NaN when a set has fewer than 2 cells.
    """
    rng = np.random.default_rng(seed)
    ir, jf = _balanced(len(real), len(fake), rng)
    if len(ir) < 2:
        return float("nan")
    is_fake = np.repeat([False, True], len(ir))
    return auc(discriminant_cv_scores(np.vstack([real[ir], fake[jf]]), is_fake, folds=folds, rng=rng), is_fake)


# ------------------------------------------------------------------ genes
def _median_log2_ratio(fake_stat: np.ndarray, real_stat: np.ndarray) -> np.ndarray:
    """Per-gene ``log2`` ratios of two non-negative statistics, over genes where either is > 0.

    A floor of 1e-3 times the mean real statistic keeps genes that one set never expresses finite.
    """
    floor = 1e-3 * max(float(real_stat.mean()), 1e-12)
    used = (fake_stat > 0) | (real_stat > 0)
    return np.log2((fake_stat[used] + floor) / (real_stat[used] + floor))


def gene_ratios(real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    """Per-gene mean and variance of ``fake`` over ``real``: medians of ``|log2 ratio|``, and the signed variance median."""
    mean_log2 = _median_log2_ratio(fake.mean(0), real.mean(0))
    var_log2: np.ndarray | list[float] = (
        _median_log2_ratio(fake.var(0, ddof=1), real.var(0, ddof=1)) if min(len(real), len(fake)) > 1 else []
    )
    nan = float("nan")
    return {
        "gene_mean_abs_log2": float(np.median(np.abs(mean_log2))) if len(mean_log2) else nan,
        "gene_var_abs_log2": float(np.median(np.abs(var_log2))) if len(var_log2) else nan,
        "gene_var_log2": float(np.median(var_log2)) if len(var_log2) else nan,
    }


def correlation_similarity(corr_a: np.ndarray, corr_b: np.ndarray) -> float:
    """Pearson correlation between the upper triangles of two gene-gene correlation matrices.

    1 means the same gene-gene correlation structure; pairs that are NaN in either matrix
    (constant genes) are ignored; NaN when fewer than 2 pairs remain or one side is constant.
    """
    iu = np.triu_indices_from(corr_a, k=1)
    a, b = corr_a[iu], corr_b[iu]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _corr(x: np.ndarray) -> np.ndarray:
    """Gene-gene Pearson correlations of the columns of ``x`` (NaN for constant genes and single cells)."""
    if len(x) < 2:
        return np.full((x.shape[1], x.shape[1]), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.corrcoef(x, rowvar=False)


# ------------------------------------------------------------------ the reference
@dataclass
class _Label:
    """One label's held-out cells: gene values, PCA scores, and what the scores reuse."""

    genes: np.ndarray
    pcs: np.ndarray
    corr: np.ndarray
    within: float  # mean distance between two of them in the PCA (energy's within-sample term)
    centre: np.ndarray


def _weighted(per_label: dict[str, dict[str, float]], weights: dict[str, int]) -> dict[str, float]:
    """Mean of every score over labels, weighted by held-out cells, ignoring NaN."""
    out = {}
    for name in next(iter(per_label.values())):
        values = np.array([per_label[k][name] for k in per_label])
        w = np.array([weights[k] for k in per_label], dtype=np.float64)
        ok = np.isfinite(values)
        out[name] = float(np.average(values[ok], weights=w[ok])) if ok.any() else float("nan")
    return out


class QualityReference:
    """Held-out real cells (and the training cells' level) against which candidates are scored.

    Built once (a PCA of the real cells, each label's held-out statistics, the training
    cells' own scores); :meth:`score` then takes well under a second for 500 candidates x
    2,000 genes on one CPU core.

    Parameters
    ----------
    heldout, heldout_labels
        Real cells the generator never saw (cells x genes, encoded unit scale) and their labels.
    train, train_labels
        Real training cells and their labels, split in two seeded halves per label: the
        PCA is fitted on one, the other is scored like candidates and gives the level real
        data reaches (``*_real``). Held-out cells, reference cells and candidates are all
        outside the PCA fit, so none has the extra variance a PCA gives the cells it was
        fitted on (a classifier would see it).
    n_components
        PCA components of the energy, k-NN and classifier scores.
    k
        Neighbours of the precision/recall/density/coverage manifolds.
    n_corr_genes
        Most variable held-out genes of the correlation agreement.
    max_train_cells
        Most training cells in each half (cost of the build).
    seed
        Seed of the subsamples, the PCA and the classifier folds.

    Attributes
    ----------
    real_
        The training cells' scores (``score`` output layout, without the ``_real`` suffix).
    """

    def __init__(
        self,
        heldout: Any,
        heldout_labels: Any,
        train: Any,
        train_labels: Any,
        *,
        n_components: int = 30,
        k: int = 5,
        n_corr_genes: int = 50,
        max_train_cells: int = 2000,
        seed: int = 0,
    ) -> None:
        held, train = as_array(heldout), as_array(train)
        held_labels, train_labels = _labels(heldout_labels, len(held)), _labels(train_labels, len(train))
        if held.shape[1] != train.shape[1]:
            raise InputError(f"held-out cells have {held.shape[1]} genes, training cells {train.shape[1]}")
        self.k, self.seed = k, seed
        pca_cells, ref_cells = _halves(train_labels, max_train_cells, np.random.default_rng(seed))
        self._fit_pca(train[pca_cells], n_components)
        pca_pcs, pca_labels = self.project(train[pca_cells]), train_labels[pca_cells]
        train, train_labels = train[ref_cells], train_labels[ref_cells]
        self.genes_ = np.argsort(-held.var(0), kind="stable")[: min(n_corr_genes, held.shape[1])]
        self.labels_: dict[str, _Label] = {}
        for name in map(str, np.unique(held_labels)):
            h = held[held_labels == name]
            pcs = self.project(h)
            fit = pca_pcs[pca_labels == name]
            centre = fit.mean(0) if len(fit) else pcs.mean(0)
            self.labels_[name] = _Label(h, pcs, _corr(h[:, self.genes_]), _within(pcs), centre)
        self.weights_ = {name: int(len(lab.genes)) for name, lab in self.labels_.items()}
        self.real_ = self._scores(train, train_labels, require_all=False)

    def _fit_pca(self, x: np.ndarray, n_components: int) -> None:
        from sklearn.utils.extmath import randomized_svd

        self.mean_ = x.mean(0)
        n = max(1, min(n_components, x.shape[0] - 1, x.shape[1]))
        _, _, vt = randomized_svd(x - self.mean_, n, random_state=self.seed)
        self.components_ = vt

    def project(self, x: np.ndarray) -> np.ndarray:
        """PCA scores of cells x genes in the reference's space."""
        return (x - self.mean_) @ self.components_.T

    def _label_scores(
        self, lab: _Label, fake: np.ndarray, fake_pcs: np.ndarray, balanced: np.ndarray
    ) -> dict[str, float]:
        """One label's scores of ``fake`` (cells x genes, PCA scores ``fake_pcs``); k-NN scores on the ``balanced`` rows."""
        return {
            "energy": energy_distance(lab.pcs, fake_pcs, lab.within) if len(lab.pcs) > 1 else float("nan"),
            **prdc(lab.pcs, fake_pcs[balanced], self.k),
            **gene_ratios(lab.genes, fake),
            "corr_agreement": correlation_similarity(lab.corr, _corr(fake[:, self.genes_])),
        }

    def _scores(self, cells: np.ndarray, labels: np.ndarray, *, require_all: bool) -> dict[str, Any]:
        """Scores of ``cells`` per label and overall; the classifier is one for all labels.

        For the k-NN scores and the classifier, each label's cells are subsampled (seeded)
        to at most its held-out cells; for the classifier, held-out cells also to at most
        the label's cells. The
        classifier sees PCA scores minus the label's centre (from the PCA half of the
        training cells), so one discriminant serves every label; its per-label AUCs come
        from the same out-of-fold scores, the overall one from all of them.
        """
        rng = np.random.default_rng(self.seed)
        missing = [name for name in self.labels_ if not (labels == name).any()]
        if missing and require_all:
            raise InputError(f"no candidates for held-out label(s) {', '.join(missing[:10])}")
        per_label: dict[str, dict[str, float]] = {}
        pooled: list[tuple[str, np.ndarray, np.ndarray]] = []
        for name, lab in self.labels_.items():
            if name in missing:
                continue
            fake = cells[labels == name]
            ir, jf = _balanced(len(lab.pcs), len(fake), rng)
            fake_pcs = self.project(fake)
            per_label[name] = self._label_scores(lab, fake, fake_pcs, jf)
            pooled.append((name, lab.pcs[ir] - lab.centre, fake_pcs[jf] - lab.centre))
        if not per_label:
            raise InputError("no cells share a label with the held-out cells")
        tags = np.concatenate([np.full(len(r) + len(f), name) for name, r, f in pooled])
        is_fake = np.concatenate([np.repeat([False, True], [len(r), len(f)]) for _, r, f in pooled])
        x = np.vstack([np.vstack([r, f]) for _, r, f in pooled])
        # a single balanced pair has nothing to cross-validate: NaN scores give NaN AUCs
        scores = discriminant_cv_scores(x, is_fake, rng=rng) if is_fake.sum() > 1 else np.full(len(x), np.nan)
        for name in per_label:
            per_label[name]["c2st_auc"] = auc(scores[tags == name], is_fake[tags == name])
        return {**_weighted(per_label, self.weights_), "c2st_auc": auc(scores, is_fake), "per_label": per_label}

    def score(self, candidates: Any, labels: Any) -> dict[str, Any]:
        """Scores of candidate cells against the held-out cells, beside the training cells' level.

        Parameters
        ----------
        candidates
            Cells x genes in the encoded unit scale (numpy or torch); candidates whose label
            has no held-out cell are ignored. For comparable precision/recall/density/coverage
            give at least as many per label as there are held-out cells (extra ones are
            subsampled, seeded, to that number for these four scores).
        labels
            One label per candidate (same names as the held-out labels).

        Returns
        -------
        Flat overall scores (:data:`SCORES`, weighted by held-out cells), each with its
        training-cell level ``{name}_real``, plus ``energy_gap`` (``energy - energy_real``)
        and ``per_label`` (``label -> {name: value}``, the same keys).
        """
        cells = as_array(candidates)
        if cells.shape[1] != self.mean_.shape[0]:
            raise InputError(f"candidates have {cells.shape[1]} genes, the reference {self.mean_.shape[0]}")
        fake = self._scores(cells, _labels(labels, len(cells)), require_all=True)
        out = _beside(fake, self.real_)
        out["per_label"] = {name: _beside(scores, self.real_["per_label"].get(name, {}))
                            for name, scores in fake["per_label"].items()}
        return out


def _beside(fake: dict[str, Any], real: dict[str, Any]) -> dict[str, Any]:
    """Candidate scores next to the training cells' (``{name}_real``) and the energy gap."""
    out: dict[str, Any] = {}
    for name in SCORES:
        out[name], out[f"{name}_real"] = fake[name], real.get(name, float("nan"))
    out["energy_gap"] = out["energy"] - out["energy_real"]
    return out


def _halves(labels: np.ndarray, max_cells: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint seeded halves of every label's cells, each at most about ``max_cells`` in all.

    Returns the indices (sorted) of the PCA cells and of the reference cells; a label's
    only cell goes to the reference.
    """
    fraction = min(0.5, max_cells / len(labels))
    pca, reference = [], []
    for name in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == name))
        m = max(1, round(fraction * len(idx)))
        reference.append(idx[:m])
        pca.append(idx[m:2 * m])
    return np.sort(np.concatenate(pca)), np.sort(np.concatenate(reference))


def _labels(labels: Any, n: int) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels).astype(str)
    if labels.shape != (n,):
        raise InputError(f"{labels.size} labels for {n} cells")
    return labels

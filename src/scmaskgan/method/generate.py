"""GENERATE: candidate cells per label from a trained generator, and the candidates file.

A candidate is a sampled cell in the encoded [0, 1] scale, padding stripped, drawn at the
depth of a random real cell of its label (for a generator conditioned on depth,
:mod:`scmaskgan.method.depth`). With ``dropouts='sample'`` (default) it has the noise and
dropouts of a real cell (the level with its per-entry noise drawn, times a Bernoulli
detection draw); with ``dropouts='expected'`` it is its expected value, the expected
normalised expression :func:`~scmaskgan.method.model.expected_rate` on the unit scale (no
zeros). Every candidate is stored with its expected value too (same noise draw, taken at
its label's median depth, so that depth does not vary them): IMPUTE finds a cell's
neighbours among the sampled candidates, which look like real cells, and in ``denoise``
mode estimates from their expected values, which carry no sampled dropouts. The expected
values are recentred on each label's real mean (:func:`recentre`): the adversarial term
lowers the generator's mean level, and the denoise estimates would carry that bias.
:func:`read_candidates` reads both the GENERATE and the FILTER files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from scmaskgan.core.config import GenerateParams
from scmaskgan.core.versions import package_versions
from scmaskgan.errors import InputError
from scmaskgan.io.atomic import atomic_path
from scmaskgan.method.calibrate import Calibrator
from scmaskgan.method.checkpoint import check_compatible, load_model
from scmaskgan.method.depth import LabelDepths, log_depth, random_members
from scmaskgan.method.device import select_device
from scmaskgan.method.encode import FORMAT_VERSION, Encoding
from scmaskgan.method.images_h5 import ImageStore
from scmaskgan.method.model import Generator, expected_rate, observe, pixel_scaled
from scmaskgan.method.train_data import read_cells, split_validation

_STR = h5py.string_dtype("utf-8")


# ---------------------------------------------------------------- sampling
def n_candidates_per_label(counts: np.ndarray, params: GenerateParams) -> np.ndarray:
    """``clip(round(candidates_per_cell * n_cells), min_candidates, max_candidates)`` per label (0 for empty labels)."""
    if params.min_candidates < 1 or params.max_candidates < params.min_candidates:
        raise InputError(
            f"need 1 <= min_candidates <= max_candidates (got {params.min_candidates}, {params.max_candidates})"
        )
    wanted = np.rint(params.candidates_per_cell * np.asarray(counts, dtype=np.float64)).astype(np.int64)
    n = np.clip(wanted, params.min_candidates, params.max_candidates)
    return np.where(np.asarray(counts) > 0, n, 0)


@torch.no_grad()
def sample_views(
    generator: Generator,
    labels: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    dropouts: str = "sample",
    pool: Any = None,
    inpaint_fraction: float = 0.2,
    n_genes: int | None = None,
    with_expected: bool = True,
    scale: float | None = None,
    depths: LabelDepths | None = None,
) -> Views:
    """Generate one cell for every entry of ``labels`` (its gene vector, padding stripped) and,
    from the same noise, its expected value.

    Parameters
    ----------
    generator
        A trained generator (put in eval mode here).
    labels
        Integer label of each cell to generate.
    batch_size
        Cells per forward pass.
    seed
        Seeds the noise, the detection draws and the choice of conditioning cells.
    device
        Where to compute.
    dropouts
        ``'sample'`` (level noise and binary detection drawn) or ``'expected'`` (the expected value).
    pool
        :class:`scmaskgan.method.train_data.CellTensors` to condition an inpainting generator on:
        each candidate gets a random cell of its label with ``inpaint_fraction`` of the
        observed pixels hidden. Ignored by other generators.
    inpaint_fraction
        Fraction of observed pixels hidden from the conditioning cell.
    n_genes
        Genes of the sample (the first ``n_genes`` pixels row-wise); all ``N * N`` when unset.
    with_expected
        Also return the expected values (``False`` skips that second array).
    scale
        The encoding's ``scale``, needed for expected values (computed as normalised expression).
    depths
        The real cells' log depths by label, for a generator with ``depth_input``: a sampled
        cell gets the depth of a random real cell of its label (of its conditioning cell for an
        inpainting generator), its expected value is taken at the label's median depth
        (:class:`~scmaskgan.method.depth.LabelDepths`).

    Returns
    -------
    :class:`Views`, filled batch by batch (no image-sized copy).
    """
    if scale is None and (with_expected or dropouts != "sample"):
        raise ValueError("expected values need the encoding's scale")
    unit_scale = 1.0 if scale is None else scale  # only used when given
    generator.eval().to(device)
    cfg = generator.cfg
    gen = torch.Generator().manual_seed(seed)
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    cond_rows = _conditioning_rows(pool, labels_t, gen) if cfg.inpaint else None
    depth, depth_expected = _depths(cfg.depth_input, labels_t, depths, pool, cond_rows, gen)
    n_genes = cfg.side * cfg.side if n_genes is None else n_genes
    out = np.empty((len(labels_t), n_genes), dtype=np.float32)
    expected = np.empty_like(out) if with_expected else None
    for start in range(0, len(labels_t), batch_size):
        part = slice(start, start + batch_size)
        lab = labels_t[start:start + batch_size]
        z = torch.randn(len(lab), cfg.latent_dim, generator=gen)
        pick = torch.rand(len(lab), generator=gen) if generator.factor_scores is not None else None
        uniform = torch.rand(len(lab), cfg.side, cfg.side, generator=gen)
        cond = None
        if cond_rows is not None:
            rows = cond_rows[start:start + batch_size]
            hide = torch.rand(len(lab), cfg.side, cfg.side, generator=gen)
            kept = pool.masks[rows] * (hide >= inpaint_fraction).float()
            cond = ((pool.values[rows] * kept).to(device), kept.to(device))
        normal = torch.randn(len(lab), cfg.side, cfg.side, generator=gen)
        onehot = F.one_hot(lab, cfg.n_labels).float().to(device)
        z, spread = z.to(device), generator.level_spread(onehot)
        if pick is not None:  # the factor coordinates from the training cells' scores (Generator.latent)
            z = generator.latent(z, lab.to(device), pick)
        if dropouts == "sample":
            level, logits = generator(z, onehot, cond, None if depth is None else depth[part])
            cells = observe(level, spread, normal.to(device)) * (uniform.to(device) < torch.sigmoid(logits)).float()
            out[part] = cells.float().flatten(1)[:, :n_genes].cpu().numpy()
        if expected is not None or dropouts != "sample":
            if dropouts != "sample" or depth_expected is not None:  # the same cell at its label's reference depth
                level, logits = generator(z, onehot, cond, None if depth_expected is None else depth_expected[part])
            cells = _unit(expected_rate(level, torch.sigmoid(logits), spread, unit_scale), unit_scale)
            values = cells.float().flatten(1)[:, :n_genes].cpu().numpy()
            if dropouts != "sample":
                out[part] = values
            if expected is not None:
                expected[part] = values
    generated_at = depth if dropouts == "sample" else depth_expected
    return Views(out, expected, None if generated_at is None else generated_at.numpy())


@dataclass
class Views:
    """Generated cells (:func:`sample_views`).

    Attributes
    ----------
    values
        ``(m, n_genes)`` float32: the generated cells as ``dropouts`` asked.
    expected
        ``(m, n_genes)`` float32: the same cells' expected normalised expression
        (:func:`~scmaskgan.method.model.expected_rate`) on the unit scale, ``log1p(rate) / scale``
        (``None`` when not asked for).
    depth
        ``(m,)`` the log depth each cell was generated at (``None`` for a generator without depth input).
    """

    values: np.ndarray
    expected: np.ndarray | None
    depth: np.ndarray | None


def _depths(
    wanted: bool,
    labels: torch.Tensor,
    depths: LabelDepths | None,
    pool: Any,
    cond_rows: torch.Tensor | None,
    gen: torch.Generator,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The log depths to sample each cell at and to take its expected value at (``None`` without depth input)."""
    if not wanted:
        return None, None
    if cond_rows is not None:
        sampled = pool.depth[cond_rows].float()
    elif depths is not None:
        sampled = depths.draw(labels, gen)
    else:
        raise ValueError("a generator with depth input needs the real cells' depths")
    return sampled, depths.reference(labels) if depths is not None else sampled


def _unit(rate: torch.Tensor, scale: float) -> torch.Tensor:
    """Normalised expression on the encoding's unit scale, ``log1p(rate) / scale``, clipped to [0, 1]."""
    return (torch.log1p(rate) / scale).clamp(0.0, 1.0)


#: Pseudo-level added to both means of :func:`recentre` (unit scale): genes a label barely
#: expresses keep a ratio near 1 instead of a noisy one.
RECENTRE_FLOOR = 0.01


def recentre(values: np.ndarray, labels: np.ndarray, real_means: Mapping[int, np.ndarray] | np.ndarray) -> np.ndarray:
    """Scale each label's candidates gene by gene so that their mean matches the label's real cells.

    ``values *= (real_mean + f) / (candidate_mean + f)`` per label and gene (``f`` =
    :data:`RECENTRE_FLOOR`), clipped to the unit scale's [0, 1]; zeros stay zeros, and
    each candidate's deviation from its label's mean keeps its relative size. The
    adversarial term lowers the trained generator's mean level by 5-25 % (measured in
    ``docs/method.md``); the neighbours' estimates would carry that bias into every
    imputed value. The expected values are matched on the unit scale, not as normalised
    expression: a label's mean normalised expression follows its most expressing cells,
    and a denoise prior centred there scored worse on held-out molecules (``docs/method.md``).

    Parameters
    ----------
    values
        ``(m, n_genes)`` unit-scale candidates (sampled or expected values), changed in place.
    labels
        ``(m,)`` label index of each candidate.
    real_means
        Mean unit-scale value of each label's real cells, ``(n_labels, n_genes)`` or ``{label: (n_genes,)}``.

    Returns
    -------
    ``values``.
    """
    for label in np.unique(labels):
        rows = labels == label
        ratio = ((real_means[label] + RECENTRE_FLOOR) / (values[rows].mean(0) + RECENTRE_FLOOR)).astype(np.float32)
        values[rows] = np.clip(values[rows] * ratio, 0.0, 1.0)
    return values


def _conditioning_rows(pool: Any, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random real cell of its label for every candidate, for an inpainting generator to start from."""
    if pool is None:
        raise InputError("an inpainting model needs real cells to condition on (the images file)")
    rows = random_members(pool.labels.numpy(), labels, gen)
    if bool((rows < 0).any()):
        raise InputError(f"label {int(labels[rows < 0][0])} has no cells to condition the inpainting generator on")
    return rows


# ---------------------------------------------------------------- candidates file
@dataclass
class Candidates:
    """Candidate cells as read from ``candidates.h5`` or ``candidates.filtered.h5``.

    Attributes
    ----------
    values
        ``(m, n_genes)`` float32, encoded [0, 1] scale.
    labels
        ``(m,)`` int32 label index into ``label_names``.
    label_names, genes
        Names.
    encoding
        The sample's :class:`~scmaskgan.method.encode.Encoding`.
    params
        Parameters of the step that wrote the file.
    scores, tau
        Anomaly scores ``(m,)`` and per-label thresholds (filtered files only, else ``None``).
    expected
        ``(m, n_genes)`` float32 expected values of the same candidates (their expected normalised
        expression on the unit scale; ``None`` in files written before they were stored).
    """

    values: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    genes: list[str]
    encoding: Encoding
    params: dict[str, Any]
    scores: np.ndarray | None = None
    tau: np.ndarray | None = None
    expected: np.ndarray | None = None

    def check_made_from(self, path: Path, images_h5: Path, label_names: list[str], genes: list[str]) -> None:
        """Raise :class:`InputError` unless these candidates (read from ``path``) have the labels and genes
        of ``images_h5`` (``label_names``, ``genes``): one sample's run, not two."""
        if list(self.genes) != list(genes) or list(self.label_names) != list(label_names):
            raise InputError(f"{path} was not made from {images_h5} (genes or labels differ)")


def _strings(ds: h5py.Dataset) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in ds[:]]


def write_candidates(
    path: Path,
    values: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    genes: list[str],
    encoding: Encoding,
    params: dict[str, Any],
    extra: dict[str, np.ndarray] | None = None,
    expected: np.ndarray | h5py.Dataset | None = None,
) -> None:
    """Write a candidates file atomically (layout in ``docs/architecture.md``); ``extra`` adds datasets,
    ``expected`` the candidates' expected values (dataset ``expected``, shaped like ``candidates``); an
    open dataset of another candidates file is copied a block of rows at a time (FILTER passes its
    input's, so the expected values are never in memory whole)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _write_index(f, labels, label_names, genes, encoding)
        _create_matrix(f, "candidates", values.shape)[...] = np.asarray(values, dtype=np.float32)
        if expected is not None:
            copy = _create_matrix(f, "expected", expected.shape)
            for start in range(0, expected.shape[0], _READ_BLOCK):
                copy[start:start + _READ_BLOCK] = expected[start:start + _READ_BLOCK]
        for name, data in (extra or {}).items():
            f.create_dataset(name, data=data)
        f.attrs["params_json"] = json.dumps(params)


def _write_index(f: h5py.File, labels: np.ndarray, label_names: list[str], genes: list[str], encoding: Encoding) -> None:
    """A candidates file's labels, names and format attributes (everything but the values and ``params_json``)."""
    f.create_dataset("labels", data=np.asarray(labels, dtype=np.int32))
    f.create_dataset("label_names", data=np.asarray(label_names, dtype=object), dtype=_STR)
    f.create_dataset("genes", data=np.asarray(genes, dtype=object), dtype=_STR)
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["encoding_json"] = json.dumps(encoding.to_dict())


def _create_matrix(f: h5py.File, name: str, shape: tuple[int, ...]) -> h5py.Dataset:
    """An empty, uncompressed float32 ``(m, n_genes)`` dataset in chunks of 1,024 rows.

    Candidates files are intermediates that GENERATE writes twice and FILTER and IMPUTE read:
    gzip (level 1) made the sampled candidates 2.6x smaller but cost ~3 s per write and ~1 s
    per read of 20,000 x 2,000 values (10 s of the 10,000-cell run), the expected values (dense
    floats) shrank by 11 % for 9 s per 33 million values.
    """
    chunk = (max(1, min(_READ_BLOCK, shape[0])), shape[1]) if shape[0] else None
    return f.create_dataset(name, shape=shape, dtype=np.float32, chunks=chunk)


#: Rows of a candidates dataset read or copied at once (the file's chunks are 1,024 rows).
_READ_BLOCK = 1024


def _read_rows(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """The ``rows`` (bool mask) of a 2-D dataset, read block by block (no full-size temporary)."""
    out = np.empty((int(rows.sum()), ds.shape[1]), dtype=np.float32)
    filled = 0
    for start in range(0, ds.shape[0], _READ_BLOCK):
        keep = rows[start:start + _READ_BLOCK]
        part = ds[start:start + len(keep)][keep]
        out[filled:filled + len(part)] = part
        filled += len(part)
    return out


def read_candidates(path: Path, kept_only: bool = True, expected: bool = True) -> Candidates:
    """Read a candidates file (GENERATE's or FILTER's).

    Parameters
    ----------
    path
        ``{id}.candidates.h5`` or ``{id}.candidates.filtered.h5``.
    kept_only
        For filtered files, return only the candidates FILTER kept.
    expected
        Also read the candidates' expected values when the file has them (only IMPUTE's
        ``denoise`` mode uses them; leaving them out halves the candidates' memory).

    Raises
    ------
    InputError
        The file is missing, truncated or not a candidates file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: candidates file not found")
    try:
        with h5py.File(path, "r") as f:
            if int(f.attrs.get("format_version", -1)) != FORMAT_VERSION or "candidates" not in f:
                raise InputError(f"{path}: not a scmaskgan candidates file")
            labels = f["labels"][:].astype(np.int32)
            scores = f["scores"][:] if "scores" in f else None
            tau = f["tau"][:] if "tau" in f else None
            kept = f["kept"][:].astype(bool) if kept_only and "kept" in f else np.ones(len(labels), dtype=bool)
            values = _read_rows(f["candidates"], kept)
            expected_values = _read_rows(f["expected"], kept) if expected and "expected" in f else None
            labels, scores = labels[kept], scores[kept] if scores is not None else None
            return Candidates(
                values=values, labels=labels, label_names=_strings(f["label_names"]), genes=_strings(f["genes"]),
                encoding=Encoding(**json.loads(f.attrs["encoding_json"])),
                params=json.loads(f.attrs["params_json"]), scores=scores, tau=tau, expected=expected_values,
            )
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: cannot read candidates file ({exc})") from exc


# ---------------------------------------------------------------- the step
def generate_candidates(model_pt: Path, images_h5: Path, out_path: Path, params: GenerateParams) -> dict[str, Any]:
    """Sample ``n_can`` candidates for every label and write ``{id}.candidates.h5``.

    The candidates go to the file one label at a time: each label's are sampled (from a seed
    of its own), written and taken by the :class:`~scmaskgan.method.calibrate.Calibrator`;
    one pass over the real cells then measures the calibration and the label means, and a
    last pass calibrates and recentres each label's expected values in the file. No more
    than one label's candidates are in memory (at 10,000 x 2,000 the step held all 20,000
    sampled and expected, 320 MB).

    Returns
    -------
    A summary: candidates per label.
    """
    device = select_device(params.device)
    model = load_model(model_pt, device)
    with_expected = params.dropouts == "sample"  # 'expected': the candidates are the expected values
    record: dict[str, Any] = {"params": dataclasses.asdict(params), "model": str(model_pt)}
    with ImageStore(images_h5) as store:
        check_compatible(model, Path(model_pt), store)
        label_names = list(store.label_names)
        per_label = n_candidates_per_label(np.bincount(store.labels, minlength=len(label_names)), params)
        labels = np.repeat(np.arange(len(per_label)), per_label)
        sample = functools.partial(
            sample_views, model.generator, batch_size=pixel_scaled(params.batch_size, model.config.side),
            device=device, dropouts=params.dropouts, pool=read_cells(store) if model.config.inpaint else None,
            inpaint_fraction=float(model.train.get("params", {}).get("inpaint_fraction", 0.2)),
            n_genes=model.encoding.n_genes, with_expected=with_expected, scale=model.encoding.scale,
            depths=LabelDepths(store.labels, log_depth(store.library_size)),
        )
        calibrator = Calibrator() if with_expected else None
        with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
            _write_index(f, labels, label_names, list(store.genes), model.encoding)
            shape = (len(labels), model.encoding.n_genes)
            sampled = _create_matrix(f, "candidates", shape)
            expected = _create_matrix(f, "expected", shape) if with_expected else None
            depth = f.create_dataset("depth", shape=(len(labels),), dtype=np.float32) if model.config.depth_input else None
            for label, rows in _label_rows(per_label):
                views = sample(labels[rows], seed=_label_seed(params.seed, label))
                sampled[rows] = views.values
                if depth is not None and views.depth is not None:
                    depth[rows] = views.depth
                if expected is not None and calibrator is not None and views.expected is not None:
                    expected[rows] = views.expected
                    calibrator.add_label(label, views.expected, views.values, views.depth)
                del views  # not kept through the passes below
            real_means: dict[int, np.ndarray] | np.ndarray | None = None
            if calibrator is not None:  # the denoise prior: no invented structure, unbiased (one read of every cell)
                calibrator.measure(
                    ((v, lab, log_depth(lib)) for v, lab, lib in store.blocks()), _held_out_cells(model.train, store.labels)
                )
                record["calibration"] = {label_names[label]: kept for label, kept in calibrator.record().items()}
                record["calibration_cells"] = {label_names[label]: on for label, on in calibrator.measured_on.items()}
                real_means = calibrator.real_means
            elif params.recentre:
                real_means = store.label_means()
            for label, rows in _label_rows(per_label):
                same = labels[rows]
                if expected is not None and calibrator is not None and real_means is not None:
                    expected[rows] = recentre(calibrator.apply(label, expected[rows]), same, real_means)
                if params.recentre and real_means is not None:
                    sampled[rows] = recentre(sampled[rows], same, real_means)
            record["versions"] = package_versions()
            f.attrs["params_json"] = json.dumps(record)
    return {"per_label": dict(zip(label_names, per_label.tolist(), strict=True))}


def _held_out_cells(train_record: Mapping[str, Any], labels: np.ndarray) -> np.ndarray | None:
    """TRAIN's validation cells, which the generator never saw: its split recomputed from the
    model's record (same labels, fraction and seed); ``None`` when the record cannot give it."""
    params = train_record.get("params", {})
    if "val_fraction" not in params or "seed" not in params:
        return None
    held_out = split_validation(labels, float(params["val_fraction"]), int(params["seed"]))
    return held_out if int(held_out.sum()) == int(train_record.get("n_val_cells", -1)) else None


def _label_rows(per_label: np.ndarray) -> Iterator[tuple[int, slice]]:
    """``(label, rows)`` of every label with candidates, their rows being contiguous (``np.repeat`` order)."""
    ends = np.cumsum(per_label)
    for label, (count, end) in enumerate(zip(per_label.tolist(), ends.tolist(), strict=True)):
        if count:
            yield label, slice(end - count, end)


def _label_seed(seed: int, label: int) -> int:
    """The seed of one label's candidates, from the step's ``seed`` and the label's index."""
    return int(np.random.SeedSequence([seed, label]).generate_state(1)[0])

"""Loaders for precomputed embeddings, labels, predictions and row ids.

``mitigate detect`` reads its inputs from three kinds of local files:

- ``.npy`` arrays, read without unpickling (``allow_pickle=False``);
- Parquet files, with the embeddings in a column holding one list of
  numbers per row;
- Hugging Face ``datasets`` folders written by ``Dataset.save_to_disk``.

Labels, predictions and ids are either their own ``.npy`` (or one-column
Parquet) file or a column of the embeddings table. Only local paths are read:
nothing here contacts a model or data hub, and a string that looks like a hub
id is rejected with a message that requests a local path.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mitigate.validation import format_rows

logger = logging.getLogger(__name__)

NPY_SUFFIXES = (".npy",)
PARQUET_SUFFIXES = (".parquet", ".pq")
# Column names tried, in order, when no embedding column is named.
EMBEDDING_COLUMN_NAMES = ("embedding", "embeddings")
# "name" or "owner/name" without a file suffix: the form of a Hugging Face hub id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class InputError(ValueError):
    """An input path or column cannot be used; the message names what to pass instead."""


@dataclass
class EmbeddingSource:
    """Embeddings read from one file, with the table they came from.

    Attributes
    ----------
    embeddings : ndarray of shape (n_samples, n_dims)
        In the dtype stored in the file; the detector converts it to float32.
    table : pyarrow.Table or None
        The whole table for Parquet and ``datasets`` inputs, so that labels,
        predictions and ids can be read from its other columns; None for
        ``.npy`` inputs.
    description : str
        The path, and the column for tables, for the report.
    """

    embeddings: np.ndarray
    table: object
    description: str


def load_embeddings(path: str | Path, *, column: str | None = None) -> EmbeddingSource:
    """Read embeddings from a ``.npy`` file, a Parquet file or a ``datasets`` folder.

    Parameters
    ----------
    path : str or Path
        A local path. Hub ids are not downloaded.
    column : str, optional
        The column holding the embeddings (tables only). By default the column
        named "embedding" or "embeddings", else the only column of lists.

    Returns
    -------
    EmbeddingSource

    Raises
    ------
    InputError
        If the path does not exist, has an unsupported format, or the column
        is missing, has missing rows, or has rows of different lengths (the
        message names the first such rows).
    """
    path = _existing_path(path, name="EMBEDDINGS")
    if path.is_dir():
        table = _read_saved_dataset(path)
    elif path.suffix.lower() in NPY_SUFFIXES:
        if column is not None:
            raise InputError(
                f"--embedding-column {column!r} was given, but {path} is a .npy array with no "
                "columns; leave the option out"
            )
        array = _read_npy(path, name="EMBEDDINGS")
        logger.info("read embeddings of shape %s from %s", array.shape, path)
        return EmbeddingSource(array, None, str(path))
    elif path.suffix.lower() in PARQUET_SUFFIXES:
        table = _read_parquet(path)
    else:
        raise InputError(_unsupported_format(path, name="EMBEDDINGS"))

    name = column if column is not None else _guess_embedding_column(table, path)
    if name not in table.column_names:
        raise InputError(
            f"column {name!r} not found in {path}; columns: {', '.join(table.column_names)}. "
            "Name the embedding column with --embedding-column"
        )
    array = _list_column_to_matrix(table.column(name), name=name, path=path)
    logger.info("read embeddings of shape %s from column %r of %s", array.shape, name, path)
    return EmbeddingSource(array, table, f"{path} (column {name!r})")


def load_vector(spec: str | Path, source: EmbeddingSource, *, name: str) -> np.ndarray:
    """Read labels, predictions or ids from a file or from a column of the embeddings table.

    Parameters
    ----------
    spec : str or Path
        A ``.npy`` file, a one-column Parquet file, or the name of a column of
        ``source.table``. An existing file wins over a column of the same name.
    source : EmbeddingSource
        The embeddings these values belong to.
    name : str
        The option name for messages, for example "--labels".

    Returns
    -------
    ndarray of shape (n_samples,)
        Numbers or strings. Lengths are checked by the detector.

    Raises
    ------
    InputError
        If ``spec`` is neither a readable file nor a column, or has missing
        values (the message names the rows).
    """
    path = Path(spec)
    if path.is_file():
        if path.suffix.lower() in NPY_SUFFIXES:
            return _read_npy(path, name=name)
        if path.suffix.lower() in PARQUET_SUFFIXES:
            table = _read_parquet(path)
            if table.num_columns != 1:
                raise InputError(
                    f"{name} file {path} has {table.num_columns} columns "
                    f"({', '.join(table.column_names)}); pass a file with one column"
                )
            return _column_to_vector(table.column(0), name=f"{name} file {path}")
        raise InputError(_unsupported_format(path, name=name))

    if source.table is not None and str(spec) in source.table.column_names:
        return _column_to_vector(source.table.column(str(spec)), name=f"{name} column {str(spec)!r}")
    if source.table is None:
        raise InputError(
            f"{name} {str(spec)!r} is not a file; a column name works only when the embeddings "
            "come from a Parquet file or a datasets folder. Pass a .npy file"
        )
    raise InputError(
        f"{name} {str(spec)!r} is neither a file nor a column of {source.description}; "
        f"columns: {', '.join(source.table.column_names)}"
    )


def _existing_path(value: str | Path, *, name: str) -> Path:
    """Return ``value`` as a Path, or raise an InputError that requests a local path."""
    path = Path(value)
    if path.exists():
        return path
    text = str(value)
    if _HUB_ID.match(text) and path.suffix.lower() not in (*NPY_SUFFIXES, *PARQUET_SUFFIXES):
        raise InputError(
            f"{name} {text!r} is not a local file or folder. mitigate reads local paths only and "
            "never downloads; if this is a Hugging Face hub id, save the dataset to disk first "
            "(datasets.load_dataset(...).save_to_disk(FOLDER)) and pass that local FOLDER"
        )
    raise InputError(f"{name} {text!r} not found; pass the path of a local file or folder")


def _unsupported_format(path: Path, *, name: str) -> str:
    return (
        f"{name} {path} has an unsupported format {path.suffix or '(no suffix)'!r}; pass a .npy "
        "file, a .parquet file or a folder written by datasets' save_to_disk"
    )


def _read_npy(path: Path, *, name: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" not in str(err):
            raise InputError(f"{name} {path} cannot be read as a .npy array: {err}") from err
        raise InputError(
            f"{name} {path} contains Python objects (for example rows of different lengths, or "
            "strings saved with dtype=object), which are not unpickled for safety. Save a "
            "numeric array, or strings with np.array(values, dtype=str)"
        ) from err


def _read_parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path} cannot be read as a Parquet file: {err}") from err


def _read_saved_dataset(path: Path):
    """Read a folder written by ``Dataset.save_to_disk`` as one pyarrow table."""
    if (path / "dataset_dict.json").is_file():
        splits = sorted(child.name for child in path.iterdir() if child.is_dir())
        example = path / splits[0] if splits else path / "SPLIT"
        raise InputError(
            f"{path} contains a DatasetDict with splits {splits}; pass one split folder, "
            f"for example {example}"
        )
    if not (path / "dataset_info.json").is_file() and not (path / "state.json").is_file():
        raise InputError(
            f"{path} is a folder but not a dataset written by save_to_disk (it has no "
            "dataset_info.json or state.json); pass such a folder, a .npy or a .parquet file"
        )
    import datasets

    dataset = datasets.load_from_disk(str(path))
    # The arrow format applies any index mapping (select, shuffle) kept by the dataset.
    return dataset.with_format("arrow")[:]


def _guess_embedding_column(table, path: Path) -> str:
    import pyarrow as pa

    for name in EMBEDDING_COLUMN_NAMES:
        if name in table.column_names:
            return name
    list_columns = [field.name for field in table.schema if _is_list_type(field.type, pa)]
    if len(list_columns) == 1:
        return list_columns[0]
    raise InputError(
        f"cannot tell which column of {path} contains the embeddings (columns: "
        f"{', '.join(table.column_names)}); name it with --embedding-column"
    )


def _is_list_type(arrow_type, pa) -> bool:
    return (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
            or pa.types.is_fixed_size_list(arrow_type))


def _list_column_to_matrix(column, *, name: str, path: Path) -> np.ndarray:
    """Convert a column of equal-length number lists into a matrix, naming any bad row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not _is_list_type(array.type, pa):
        raise InputError(
            f"column {name!r} of {path} has type {array.type}; the embedding column needs one "
            "list of numbers per row"
        )
    value_type = array.type.value_type
    if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
        raise InputError(
            f"column {name!r} of {path} contains lists of {value_type}; each row must be a flat "
            "list of numbers"
        )
    if array.null_count:
        rows = np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))
        raise InputError(f"column {name!r} of {path} has missing rows: {format_rows(rows)}")

    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    if lengths.size and np.any(lengths != lengths[0]):
        values, counts = np.unique(lengths, return_counts=True)
        expected = values[np.argmax(counts)]
        rows = np.flatnonzero(lengths != expected)
        raise InputError(
            f"column {name!r} of {path} has rows of different lengths: most rows have "
            f"{expected} values, but row {rows[0]} has {lengths[rows[0]]}"
            + (f" (rows {format_rows(rows)} differ)" if rows.size > 1 else "")
        )

    flat = pc.list_flatten(array)
    if flat.null_count:
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
        rows = np.unique(parents[flat.is_null().to_numpy(zero_copy_only=False)])
        raise InputError(f"column {name!r} of {path} has missing values in rows {format_rows(rows)}")
    width = int(lengths[0]) if lengths.size else 0
    return flat.to_numpy(zero_copy_only=False).reshape(len(array), width)


def _column_to_vector(column, *, name: str) -> np.ndarray:
    """Convert one table column into a 1-d array, naming the rows of any missing value."""
    values = column.to_pylist()
    missing = np.array([value is None for value in values], dtype=bool)
    if missing.any():
        raise InputError(f"{name} has missing values in rows {format_rows(np.flatnonzero(missing))}")
    if values and isinstance(values[0], (list, dict)):
        raise InputError(f"{name} contains lists or records; pass one number or string per row")
    return np.asarray(values)


"""Input checks run once, at the library boundary.

Every public entry point (the detector, the scores, the CLI) passes user input
through these functions, so the rest of the code can assume a finite float32
matrix of shape (n_samples, n_dims) and integer label codes.
"""

from __future__ import annotations

import warnings

import numpy as np

NONFINITE_POLICIES = ("raise", "drop")
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Row indices listed in an error message before the rest are only counted.
MAX_LISTED_ROWS = 10


def check_embeddings(
    embeddings, *, nonfinite: str = "raise", name: str = "embeddings", min_rows: int = 2
):
    """Validate embeddings and convert them to a float32 matrix.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_dims)
        Any real dtype: float16, float32, float64 or integer.
    nonfinite : {"raise", "drop"}, default="raise"
        What to do with rows that contain NaN or infinity. ``"raise"`` raises
        a ValueError naming the first bad rows; ``"drop"`` removes them with a
        UserWarning that counts them.
    name : str
        Name used in error messages.
    min_rows : int, default=2
        Fewest usable rows accepted.

    Returns
    -------
    embeddings : ndarray of shape (n_kept, n_dims), dtype float32
    kept : ndarray of shape (n_samples,), dtype bool
        True for the rows that were kept.

    Raises
    ------
    ValueError
        If the input is not a 2-d real array with at least ``min_rows`` rows
        and 1 column, or contains non-finite rows while ``nonfinite="raise"``.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(
            f"invalid nonfinite={nonfinite!r}; expected one of {NONFINITE_POLICIES}"
        )
    array = np.asarray(embeddings)
    if array.dtype == object:
        raise ValueError(
            f"{name} has dtype object; pass a numeric array of shape (n_samples, n_dims). "
            "Ragged rows (vectors of different lengths) produce this dtype."
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == bool):
        raise ValueError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(
            f"{name} must have shape (n_samples, n_dims), got shape {array.shape}; "
            "reshape a single vector with .reshape(1, -1) or flatten extra axes first"
        )
    if array.shape[1] < 1:
        raise ValueError(f"{name} has shape {array.shape}: it needs at least 1 dimension")

    # Rows beyond the float32 range would turn into infinity below and be
    # reported as non-finite, which would send the user looking for a NaN.
    if np.issubdtype(array.dtype, np.floating) and array.dtype.itemsize > 4:
        with np.errstate(invalid="ignore"):
            too_large = np.isfinite(array).all(axis=1) & (np.abs(array) > FLOAT32_MAX).any(axis=1)
        if too_large.any():
            raise ValueError(
                f"{name} has values beyond the float32 range (+-{FLOAT32_MAX:.3g}) in "
                f"{too_large.sum()} row(s): {format_rows(np.flatnonzero(too_large))}; "
                "divide the embeddings by a common factor first"
            )

    # One conversion for every dtype: float16 and small integers convert exactly.
    array = array.astype(np.float32, copy=False)
    finite_rows = np.isfinite(array).all(axis=1)
    if not finite_rows.all():
        bad = np.flatnonzero(~finite_rows)
        shown = format_rows(bad)
        if nonfinite == "raise":
            raise ValueError(
                f"{name} contains NaN or infinite values in {bad.size} row(s): {shown}. "
                "Fix the model output, or drop these rows with nonfinite='drop' "
                "(--drop-nonfinite on the command line)"
            )
        warnings.warn(
            f"dropped {bad.size} row(s) of {name} with NaN or infinite values: {shown}",
            UserWarning,
            stacklevel=2,
        )
        array = array[finite_rows]
    if array.shape[0] < min_rows:
        raise ValueError(
            f"{name} has {array.shape[0]} usable row(s); at least {min_rows} are needed"
        )
    return np.ascontiguousarray(array), finite_rows


def check_labels(values, n_samples: int, *, name: str = "labels"):
    """Validate a label or prediction vector and encode it as integer codes.

    Parameters
    ----------
    values : array-like of shape (n_samples,)
        Integers, integer-valued floats, booleans or strings. A missing entry
        (None or NaN) is rejected with its row index.
    n_samples : int
        Expected length.
    name : str
        Name used in error messages.

    Returns
    -------
    codes : ndarray of shape (n_samples,), dtype int64
        Index of each value in ``classes``.
    classes : ndarray
        Sorted distinct values.

    Raises
    ------
    ValueError
        If the shape or length is wrong, an entry is missing, or the values
        mix types that cannot be sorted together (for example 1 and "1").
    """
    array = _as_vector(values, n_samples, name=name)
    if np.issubdtype(array.dtype, np.floating):
        missing = ~np.isfinite(array)
        if missing.any():
            raise ValueError(
                f"{name} contains NaN or infinite values in row(s) {format_rows(np.flatnonzero(missing))}; "
                "every row needs a class"
            )
        if not np.all(array == np.round(array)):
            raise ValueError(f"{name} must be integers or strings, got non-integer floats")
        array = array.astype(np.int64)
    try:
        classes, codes = np.unique(array, return_inverse=True)
    except TypeError as err:
        kinds = sorted({type(value).__name__ for value in array.tolist()})
        raise ValueError(
            f"{name} mix values of types {kinds} that cannot be sorted together; "
            "pass one type, for example every class as a string"
        ) from err
    return codes.astype(np.int64).ravel(), classes


def check_ids(values, n_samples: int, *, name: str = "ids") -> list:
    """Validate row ids and return them as a list of Python ints or strings.

    Parameters
    ----------
    values : array-like of shape (n_samples,)
        One distinct integer or string per embedding row.
    n_samples : int
        Expected length.

    Returns
    -------
    list of int or str, of length n_samples

    Raises
    ------
    ValueError
        If the shape or length is wrong, an id is missing, or an id repeats
        (member ids in the report would then be ambiguous).
    """
    array = _as_vector(values, n_samples, name=name)
    if np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and np.all(array == np.round(array))):
            raise ValueError(f"{name} must be integers or strings, got non-integer floats")
        array = array.astype(np.int64)
    ids = [value.item() if isinstance(value, np.generic) else value for value in array.tolist()]
    ids = [value if isinstance(value, int) and not isinstance(value, bool) else str(value)
           for value in ids]
    seen: dict = {}
    for row, value in enumerate(ids):
        if value in seen:
            raise ValueError(
                f"{name} must be distinct, but rows {seen[value]} and {row} share the id {value!r}"
            )
        seen[value] = row
    return ids


def _as_vector(values, n_samples: int, *, name: str) -> np.ndarray:
    """Return ``values`` as a 1-d array of length ``n_samples`` with no None entry."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must have shape ({n_samples},), got shape {array.shape}")
    if array.shape[0] != n_samples:
        raise ValueError(
            f"{name} has {array.shape[0]} entries but the embeddings have {n_samples} rows; "
            "pass one entry per embedding row, in the same order"
        )
    if array.dtype == object:
        missing = np.array([value is None or (isinstance(value, float) and not np.isfinite(value))
                            for value in array], dtype=bool)
        if missing.any():
            raise ValueError(
                f"{name} has missing values in row(s) {format_rows(np.flatnonzero(missing))}; "
                "every row needs a value"
            )
    if not (array.dtype.kind in "biufUSO"):
        raise ValueError(f"{name} must be integers or strings, got dtype {array.dtype}")
    return array


def format_rows(rows) -> str:
    """Format row indices for a message: the first ``MAX_LISTED_ROWS`` of them and a count."""
    rows = np.asarray(rows)
    shown = ", ".join(str(int(i)) for i in rows[:MAX_LISTED_ROWS])
    if rows.size > MAX_LISTED_ROWS:
        shown += f" and {rows.size - MAX_LISTED_ROWS} more"
    return shown


def check_int(name: str, value, *, minimum: int, maximum: int | None = None) -> int:
    """Return ``value`` as an int after checking it lies in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ValueError(f"{name} must be at least {minimum}{upper}, got {value}")
    return int(value)


def _is_number(value) -> bool:
    """Return True for a real number that is not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer))


def check_positive(name: str, value, *, hint: str = "") -> float:
    """Return ``value`` as a float after checking it is a number above 0 (NaN is rejected).

    ``hint`` is added to the error message, e.g. the default or how to turn
    the option off.
    """
    if not _is_number(value) or not value > 0:
        raise ValueError(f"{name} must be a positive number{hint}; got {value!r}")
    return float(value)


def check_fraction(name: str, value, *, low: float = 0.0, high: float = 1.0) -> float:
    """Return ``value`` as a float after checking it lies in [low, high]."""
    if not _is_number(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (low <= float(value) <= high):
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return float(value)

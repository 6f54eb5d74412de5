"""Readers for the interaction formats people really have.

Every reader returns `RawData`: an interactions frame with columns `user_id`, `item_id` (str) and
`timestamp` (float, NaN when the format only has order) in file order, and an items frame with
`item_id` plus whichever text fields the format carries (`title`, `brand`, `categories`,
`description`, `image`). Errors name the file and, where there is one, the line.
"""

from __future__ import annotations

import ast
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

TEXT_FIELDS = ("title", "brand", "categories", "description", "image")


class DataFormatError(ValueError):
    """Input data is missing or malformed; the message names the file and line or field."""


@dataclass
class RawData:
    interactions: pd.DataFrame
    items: pd.DataFrame


def _require(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: file not found")
    return path


def _open_text(path: Path, encoding: str = "utf-8"):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding)
    return open(path, encoding=encoding)


def _not_text(path: Path, encoding: str = "utf-8") -> DataFormatError:
    """The line and byte of `path` that are not `encoding` text (Python's decode error names neither)."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as exc:
                return DataFormatError(f"{path}: line {number}: not valid {encoding} text "
                                       f"(byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")
    return DataFormatError(f"{path}: not valid {encoding} text")


def _lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    with _open_text(_require(path), encoding) as fh:
        try:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    yield number, line
        except UnicodeDecodeError:
            raise _not_text(path, encoding) from None


def _interactions(users, items, timestamps=None) -> pd.DataFrame:
    frame = pd.DataFrame({"user_id": pd.Series(users, dtype=str), "item_id": pd.Series(items, dtype=str)})
    frame["timestamp"] = np.nan if timestamps is None else pd.to_numeric(pd.Series(timestamps), errors="coerce").to_numpy(float)
    return frame


def _items_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=["item_id"])
    frame["item_id"] = frame["item_id"].astype(str)
    keep = ["item_id"] + [c for c in TEXT_FIELDS if c in frame.columns]
    return frame[keep].drop_duplicates("item_id", keep="first").reset_index(drop=True)


def _join(value) -> str | None:
    """Flatten list-valued metadata (category paths, description paragraphs) into one string."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (list, tuple)):
        parts = [_join(v) for v in value]
        return " > ".join(p for p in parts if p) or None
    text = str(value).strip()
    return text or None


# --- RecBole atomic files -------------------------------------------------------------------


def _read_atomic_table(path: Path) -> pd.DataFrame:
    path = _require(path)
    try:
        with open(path, encoding="utf-8") as fh:
            header = fh.readline().rstrip("\n").split("\t")
    except UnicodeDecodeError:
        raise _not_text(path) from None
    names = []
    for field in header:
        name, _, kind = field.partition(":")
        if not kind:
            raise DataFormatError(f"{path}: line 1: header field {field!r} lacks a type (expected e.g. 'item_id:token')")
        names.append(name)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataFormatError(f"{path}: line 1: header field name(s) {repeated} appear more than once")
    try:
        frame = pd.read_csv(path, sep="\t", skiprows=1, names=names, dtype=str, quoting=3, keep_default_na=False)
    except pd.errors.ParserError as exc:
        raise DataFormatError(f"{path}: {exc}") from exc
    except UnicodeDecodeError:
        raise _not_text(path) from None
    return frame


def read_atomic(directory: str | Path, name: str | None = None) -> RawData:
    """RecBole atomic files `<name>.inter` (+ optional `<name>.item`) with typed headers."""
    directory = Path(directory)
    name = name or directory.name
    inter_path = directory / f"{name}.inter"
    inter = _read_atomic_table(inter_path)
    for column in ("user_id", "item_id"):
        if column not in inter.columns:
            raise DataFormatError(f"{inter_path}: line 1: no '{column}' field in header {list(inter.columns)}")
    timestamps = inter["timestamp"] if "timestamp" in inter.columns else None
    interactions = _interactions(inter["user_id"], inter["item_id"], timestamps)
    item_path = directory / f"{name}.item"
    if item_path.exists():
        table = _read_atomic_table(item_path)
        rename = {"movie_title": "title", "title": "title", "class": "categories", "genre": "categories",
                  "categories": "categories", "brand": "brand", "description": "description"}
        table = table.rename(columns={k: v for k, v in rename.items() if k in table.columns})
        if "release_year" in table.columns and "title" in table.columns:
            table["title"] = table["title"] + " (" + table["release_year"].str.split(".").str[0] + ")"
        items = _items_frame(table.to_dict("records"))
    else:
        items = _items_frame([])
    return RawData(interactions, items)


# --- GroupLens MovieLens originals ------------------------------------------------------------

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")


def _split_rows(path: Path, sep: str, n_fields: int, encoding: str) -> list[list[str]]:
    rows = []
    for number, line in _lines(path, encoding):
        fields = line.rstrip("\n").split(sep)
        if len(fields) != n_fields:
            raise DataFormatError(f"{path}: line {number}: expected {n_fields} '{sep}'-separated fields, got {len(fields)}")
        rows.append(fields)
    if not rows:
        raise DataFormatError(f"{path}: no data lines")
    return rows


def read_movielens(directory: str | Path) -> RawData:
    """GroupLens originals: ML-100K (`u.data`, `u.item`) or ML-1M style (`ratings.dat`, `movies.dat`), latin-1."""
    directory = Path(directory)
    if (directory / "u.data").exists():
        rows = np.array(_split_rows(directory / "u.data", "\t", 4, "latin-1"), dtype=object)
        interactions = _interactions(rows[:, 0], rows[:, 1], rows[:, 3])
        records = []
        for fields in _split_rows(directory / "u.item", "|", 24, "latin-1"):
            genres = [g for g, flag in zip(ML100K_GENRES, fields[5:]) if flag == "1"]
            records.append({"item_id": fields[0], "title": fields[1], "categories": " ".join(genres)})
        return RawData(interactions, _items_frame(records))
    if (directory / "ratings.dat").exists():
        rows = np.array(_split_rows(directory / "ratings.dat", "::", 4, "latin-1"), dtype=object)
        interactions = _interactions(rows[:, 0], rows[:, 1], rows[:, 3])
        records = [{"item_id": f[0], "title": f[1], "categories": f[2].replace("|", " ")}
                   for f in _split_rows(directory / "movies.dat", "::", 3, "latin-1")]
        return RawData(interactions, _items_frame(records))
    raise DataFormatError(f"{directory}: neither u.data (ML-100K) nor ratings.dat (ML-1M) found")


# --- Generic item tables ----------------------------------------------------------------------


def _read_csv(path: Path, sep: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=sep, dtype=str)
    except pd.errors.EmptyDataError as exc:
        raise DataFormatError(f"{path}: empty file (a header row is needed)") from exc
    except pd.errors.ParserError as exc:
        raise DataFormatError(f"{path}: {exc}") from exc
    except UnicodeDecodeError:
        raise _not_text(path) from None


def read_item_table(path: str | Path) -> pd.DataFrame:
    """Items as JSONL, CSV or Parquet with an `item_id` column and optional text fields."""
    path = _require(Path(path))
    suffixes = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffixes in (".jsonl", ".json", ".jsonl.gz", ".json.gz"):
        records = [record for _, record in _records(path, json.loads, "JSON line")]
        frame = pd.DataFrame.from_records(records)
    elif suffixes in (".csv", ".csv.gz", ".tsv"):
        frame = _read_csv(path, "\t" if suffixes == ".tsv" else ",")
    elif suffixes == ".parquet":
        frame = pd.read_parquet(path)
    else:
        raise DataFormatError(f"{path}: unknown item table format {suffixes!r} (use .jsonl, .csv, .tsv or .parquet)")
    if "item_id" not in frame.columns:
        raise DataFormatError(f"{path}: no 'item_id' field (fields: {list(frame.columns)})")
    for column in ("categories", "description"):
        if column in frame.columns:
            frame[column] = frame[column].map(_join)
    return _items_frame(frame.to_dict("records"))


# --- P5 user_sequence.txt -----------------------------------------------------------------------


def read_p5(sequence_path: str | Path, items_path: str | Path | None = None) -> RawData:
    """P5 `user_sequence.txt`: `USER ITEM ITEM ...` per line, chronological."""
    sequence_path = Path(sequence_path)
    users, items = [], []
    for number, line in _lines(sequence_path):
        fields = line.split()
        if len(fields) < 2:
            raise DataFormatError(f"{sequence_path}: line {number}: a user id followed by at least one item id expected")
        users.extend([fields[0]] * (len(fields) - 1))
        items.extend(fields[1:])
    interactions = _interactions(users, items)
    table = read_item_table(items_path) if items_path is not None else _items_frame([])
    return RawData(interactions, table)


# --- LC-Rec json --------------------------------------------------------------------------------


def _load_json_object(path: Path, expected: str) -> dict:
    try:
        with _open_text(_require(path)) as fh:
            value = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    except UnicodeDecodeError:
        raise _not_text(path) from None
    if not isinstance(value, dict):
        raise DataFormatError(f"{path}: expected a JSON object mapping {expected}, got {type(value).__name__}")
    return value


def read_lcrec(inter_path: str | Path, item_path: str | Path | None = None) -> RawData:
    """LC-Rec `<Name>.inter.json` ({user: [items...]}) and `<Name>.item.json` ({item: {title, ...}})."""
    inter_path = Path(inter_path)
    sequences = _load_json_object(inter_path, "user ids to item lists")
    users, items = [], []
    for user, sequence in sequences.items():
        if not isinstance(sequence, list):
            raise DataFormatError(f"{inter_path}: user {user!r}: expected a list of item ids, got {type(sequence).__name__}")
        users.extend([user] * len(sequence))
        items.extend(str(i) for i in sequence)
    records = []
    if item_path is not None:
        item_path = Path(item_path)
        for item_id, fields in _load_json_object(item_path, "item ids to text fields").items():
            if not isinstance(fields, dict):
                raise DataFormatError(f"{item_path}: item {item_id!r}: expected an object of text fields")
            records.append({"item_id": item_id, **{k: _join(fields.get(k)) for k in TEXT_FIELDS if k in fields}})
    return RawData(_interactions(users, items), _items_frame(records))


# --- Amazon Reviews -------------------------------------------------------------------------------


def _records(path: Path, parse: Callable[[str], dict], what: str) -> Iterator[tuple[int, dict]]:
    for number, line in _lines(path):
        try:
            record = parse(line)
        except (ValueError, SyntaxError) as exc:
            raise DataFormatError(f"{path}: line {number}: not a valid {what} ({exc.__class__.__name__})") from exc
        if not isinstance(record, dict):
            raise DataFormatError(f"{path}: line {number}: expected an object")
        yield number, record


def _field(record: dict, key: str, path: Path, number: int):
    if key not in record:
        raise DataFormatError(f"{path}: line {number}: missing field {key!r}")
    return record[key]


def _reviews(path: str | Path, user: str, item: str, time: str) -> pd.DataFrame:
    """Interactions from JSON-lines reviews, given the format's user, item and time field names."""
    path = Path(path)
    rows = [[_field(record, key, path, number) for key in (user, item, time)]
            for number, record in _records(path, json.loads, "JSON line")]
    users, items, times = zip(*rows) if rows else ((), (), ())
    return _interactions(list(users), list(items), list(times))


def read_amazon2014(reviews_path: str | Path, meta_path: str | Path | None = None) -> RawData:
    """Amazon Reviews 2014: `reviews_<Cat>_5.json.gz` (JSON lines) and `meta_<Cat>.json.gz` (Python literals)."""
    records = []
    if meta_path is not None:
        meta_path = Path(meta_path)
        for number, record in _records(meta_path, ast.literal_eval, "Python literal"):
            records.append({
                "item_id": _field(record, "asin", meta_path, number),
                "title": _join(record.get("title")),
                "brand": _join(record.get("brand")),
                "categories": _join((record.get("categories") or [None])[0]),
                "description": _join(record.get("description")),
                "image": _join(record.get("imUrl")),
            })
    return RawData(_reviews(reviews_path, "reviewerID", "asin", "unixReviewTime"), _items_frame(records))


def read_amazon2023(reviews_path: str | Path, meta_path: str | Path | None = None) -> RawData:
    """Amazon Reviews 2023 JSONL: reviews keyed by `parent_asin`, metadata with `store`, `images`."""
    records = []
    if meta_path is not None:
        meta_path = Path(meta_path)
        for number, record in _records(meta_path, json.loads, "JSON line"):
            images = record.get("images")
            first = images[0] if isinstance(images, list) and images and isinstance(images[0], dict) else {}
            records.append({
                "item_id": _field(record, "parent_asin", meta_path, number),
                "title": _join(record.get("title")),
                "brand": _join(record.get("store")),
                "categories": _join(record.get("categories")),
                "description": _join(record.get("description")),
                "image": first.get("large") or first.get("hi_res") or first.get("thumb"),
            })
    return RawData(_reviews(reviews_path, "user_id", "parent_asin", "timestamp"), _items_frame(records))


# --- Generic interactions table -----------------------------------------------------------------


def read_interactions_table(path: str | Path, user: str = "user_id", item: str = "item_id",
                            timestamp: str | None = "timestamp", items_path: str | Path | None = None) -> RawData:
    """A CSV/TSV/Parquet interactions table with a column mapping (timestamp optional)."""
    path = _require(Path(path))
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix in (".csv", ".tsv", ".gz"):
        frame = _read_csv(path, "\t" if ".tsv" in path.suffixes else ",")
    else:
        raise DataFormatError(f"{path}: unknown interactions format {path.suffix!r} (use .csv, .tsv or .parquet)")
    for role, column in (("user", user), ("item", item), ("timestamp", timestamp)):
        if column is not None and column not in frame.columns:
            raise DataFormatError(f"{path}: {role} column {column!r} not found (columns: {list(frame.columns)})")
    times = frame[timestamp] if timestamp else None
    if times is not None:
        parsed = pd.to_numeric(times, errors="coerce")
        bad = parsed.isna() & times.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataFormatError(f"{path}: line {row + 2}: field {timestamp!r} is not a number: {times.iloc[row]!r}")
    table = read_item_table(items_path) if items_path is not None else _items_frame([])
    return RawData(_interactions(frame[user], frame[item], times), table)

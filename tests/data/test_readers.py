"""Every reader on a small fixture in its real format, and the errors bad input gets."""

import gzip
import json

import pandas as pd
import pytest

from sidrec.data import readers
from sidrec.data.readers import DataFormatError


def test_atomic_reads_typed_headers(tmp_path):
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                        "u1\ti1\t3\t20\nu1\ti2\t4\t10\n")
    (tmp_path / "toy.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                       "i1\tToy Story\t1995\tAnimation Comedy\n")
    raw = readers.read_atomic(tmp_path, "toy")
    assert raw.interactions[["user_id", "item_id"]].values.tolist() == [["u1", "i1"], ["u1", "i2"]]
    assert raw.interactions["timestamp"].tolist() == [20.0, 10.0]
    assert raw.items.loc[0, "title"] == "Toy Story (1995)"
    assert raw.items.loc[0, "categories"] == "Animation Comedy"


def test_atomic_header_without_types_names_file_and_line(tmp_path):
    (tmp_path / "bad.inter").write_text("user_id\titem_id\nu\ti\n")
    with pytest.raises(DataFormatError, match=r"bad\.inter: line 1"):
        readers.read_atomic(tmp_path, "bad")


def test_movielens_100k_and_1m_originals(tmp_path):
    ml100k = tmp_path / "ml-100k"
    ml100k.mkdir()
    (ml100k / "u.data").write_text("1\t10\t5\t881250949\n2\t10\t3\t881250950\n")
    flags = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)
    (ml100k / "u.item").write_bytes(f"10|Caf\xe9 (1995)|01-Jan-1995||http://x|{flags}\n".encode("latin-1"))
    raw = readers.read_movielens(ml100k)
    assert len(raw.interactions) == 2 and raw.items.loc[0, "title"] == "Café (1995)"
    assert raw.items.loc[0, "categories"] == "Comedy"
    ml1m = tmp_path / "ml-1m"
    ml1m.mkdir()
    (ml1m / "ratings.dat").write_text("1::1193::5::978300760\n")
    (ml1m / "movies.dat").write_bytes("1193::Am\xe9lie (2001)::Comedy|Romance\n".encode("latin-1"))
    raw = readers.read_movielens(ml1m)
    assert raw.items.loc[0, "categories"] == "Comedy Romance"
    (ml1m / "ratings.dat").write_text("1::1193::5::978300760\n1::1193\n")
    with pytest.raises(DataFormatError, match=r"ratings\.dat: line 2"):
        readers.read_movielens(ml1m)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_p5_with_item_tables(tmp_path, fmt):
    (tmp_path / "user_sequence.txt").write_text("A x1 x2 x3\nB x2\n")
    items = pd.DataFrame({"item_id": ["x1", "x2", "x3"], "title": ["one", "two", "three"]})
    path = tmp_path / f"items.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in items.to_dict("records")))
    elif fmt == "csv":
        items.to_csv(path, index=False)
    else:
        items.to_parquet(path)
    raw = readers.read_p5(tmp_path / "user_sequence.txt", path)
    assert raw.interactions["item_id"].tolist() == ["x1", "x2", "x3", "x2"]
    assert raw.items.set_index("item_id").loc["x3", "title"] == "three"


def test_p5_malformed_line_and_item_table_without_id(tmp_path):
    (tmp_path / "seq.txt").write_text("A x1\nB\n")
    with pytest.raises(DataFormatError, match=r"seq\.txt: line 2"):
        readers.read_p5(tmp_path / "seq.txt")
    (tmp_path / "items.jsonl").write_text('{"asin": "x"}\n')
    with pytest.raises(DataFormatError, match=r"items\.jsonl: no 'item_id' field"):
        readers.read_item_table(tmp_path / "items.jsonl")
    (tmp_path / "items.jsonl").write_text('{"item_id": "x"}\n{oops\n')
    with pytest.raises(DataFormatError, match=r"items\.jsonl: line 2"):
        readers.read_item_table(tmp_path / "items.jsonl")


def test_lcrec_json(tmp_path):
    (tmp_path / "S.inter.json").write_text(json.dumps({"0": [0, 1, 2], "1": [2, 0]}))
    (tmp_path / "S.item.json").write_text(json.dumps({"0": {"title": "t0", "brand": "b", "categories": "A,B"}}))
    raw = readers.read_lcrec(tmp_path / "S.inter.json", tmp_path / "S.item.json")
    assert raw.interactions["item_id"].tolist() == ["0", "1", "2", "2", "0"]
    assert raw.items.loc[0, "brand"] == "b"
    (tmp_path / "S.inter.json").write_text('{"0": [0, 1,\n')
    with pytest.raises(DataFormatError, match=r"S\.inter\.json: line"):
        readers.read_lcrec(tmp_path / "S.inter.json")


def test_amazon2014_reviews_and_python_literal_metadata(tmp_path):
    reviews = tmp_path / "reviews_Toy_5.json.gz"
    with gzip.open(reviews, "wt") as fh:
        fh.write(json.dumps({"reviewerID": "R1", "asin": "A1", "unixReviewTime": 5}) + "\n")
        fh.write(json.dumps({"reviewerID": "R1", "asin": "A2", "unixReviewTime": 3}) + "\n")
    meta = tmp_path / "meta_Toy.json.gz"
    with gzip.open(meta, "wt") as fh:
        fh.write(str({"asin": "A1", "title": "Lego", "categories": [["Toys", "Blocks"]], "imUrl": "http://i/a.jpg"}) + "\n")
        fh.write("{'asin': 'A2', 'title': __import__('os').system('echo pwned')}\n")
    with pytest.raises(DataFormatError, match=r"meta_Toy\.json\.gz: line 2"):
        readers.read_amazon2014(reviews, meta)
    with gzip.open(meta, "wt") as fh:
        fh.write(str({"asin": "A1", "title": "Lego", "categories": [["Toys", "Blocks"]], "imUrl": "http://i/a.jpg"}) + "\n")
    raw = readers.read_amazon2014(reviews, meta)
    assert raw.interactions["timestamp"].tolist() == [5.0, 3.0]
    assert raw.items.loc[0, "categories"] == "Toys > Blocks" and raw.items.loc[0, "image"] == "http://i/a.jpg"


def test_amazon2023_jsonl_missing_field_is_named(tmp_path):
    reviews = tmp_path / "Toys.jsonl"
    reviews.write_text(json.dumps({"user_id": "U", "parent_asin": "P", "timestamp": 1}) + "\n"
                       + json.dumps({"user_id": "U", "timestamp": 2}) + "\n")
    with pytest.raises(DataFormatError, match=r"Toys\.jsonl: line 2: missing field 'parent_asin'"):
        readers.read_amazon2023(reviews)
    reviews.write_text(json.dumps({"user_id": "U", "parent_asin": "P", "timestamp": 1}) + "\n")
    meta = tmp_path / "meta_Toys.jsonl"
    meta.write_text(json.dumps({"parent_asin": "P", "title": "Kite", "store": "Sky", "categories": ["Toys", "Kites"],
                                "description": ["Flies", "well"], "images": [{"large": "http://i/k.jpg"}]}) + "\n")
    raw = readers.read_amazon2023(reviews, meta)
    assert raw.items.loc[0].to_dict() == {"item_id": "P", "title": "Kite", "brand": "Sky",
                                          "categories": "Toys > Kites", "description": "Flies > well",
                                          "image": "http://i/k.jpg"}


def test_amazon2023_images_that_are_not_a_list_mean_no_picture(tmp_path):
    reviews = tmp_path / "r.jsonl"
    reviews.write_text(json.dumps({"user_id": "U", "parent_asin": "P", "timestamp": 1}) + "\n")
    meta = tmp_path / "m.jsonl"
    meta.write_text(json.dumps({"parent_asin": "P", "title": "Kite", "images": {"x": 1}}) + "\n")
    assert readers.read_amazon2023(reviews, meta).items.loc[0, "image"] is None


def test_interactions_table_column_mapping(tmp_path):
    path = tmp_path / "log.csv"
    pd.DataFrame({"who": ["a", "a", "b"], "what": ["x", "y", "x"], "when": [2, 1, 3]}).to_csv(path, index=False)
    raw = readers.read_interactions_table(path, user="who", item="what", timestamp="when")
    assert raw.interactions["user_id"].tolist() == ["a", "a", "b"]
    with pytest.raises(DataFormatError, match=r"log\.csv: item column 'item' not found"):
        readers.read_interactions_table(path, user="who", item="item", timestamp="when")
    pd.DataFrame({"who": ["a"], "what": ["x"], "when": ["yesterday"]}).to_csv(path, index=False)
    with pytest.raises(DataFormatError, match=r"log\.csv: line 2: field 'when'"):
        readers.read_interactions_table(path, user="who", item="what", timestamp="when")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataFormatError, match="nothere.txt: file not found"):
        readers.read_p5(tmp_path / "nothere.txt")

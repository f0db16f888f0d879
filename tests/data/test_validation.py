"""Bad data is stopped at the door with one clear error, and nothing is written."""

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from lib.data.acquire import acquire, validate_file
from lib.errors import DataValidationError
from tests.conftest import REAL_SAMPLE, SHARED_SAMPLE

HEADER = "step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,newbalanceDest,isFraud,isFlaggedFraud"
GOOD = [
    "1,PAYMENT,9839.64,C1231006815,170136,160296.36,M1979787155,0,0,0,0",
    "1,TRANSFER,181,C1305486145,181,0,C553264065,0,0,1,0",
    "1,CASH_OUT,181,C840083671,181,0,C38997010,21182,0,1,0",
]


def write_csv(tmp_path, lines, name="input.csv"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_real_sample_passes_unchanged():
    summary = validate_file(str(REAL_SAMPLE))
    assert (summary.rows, summary.frauds) == (19_999, 81)
    assert summary.type_counts == {"CASH_IN": 3497, "CASH_OUT": 3648, "DEBIT": 441, "PAYMENT": 10440, "TRANSFER": 1973}


@pytest.mark.skipif(not SHARED_SAMPLE.exists(), reason="no ../shared checkout beside the repository")
def test_reference_copy_is_the_shared_sample():
    assert REAL_SAMPLE.read_bytes() == SHARED_SAMPLE.read_bytes()


def test_real_sample_acquires_to_parquet(tmp_path):
    out = tmp_path / "raw.parquet"
    result = acquire(str(REAL_SAMPLE), out, rows=0, seed=1)
    assert result.rows == 19_999 and result.frauds == 81
    table = pq.read_table(out)
    assert table.num_rows == 19_999 and table.schema.field("amount").type == pa.float64()


BAD_FILES = {
    "missing column": (
        [HEADER.replace(",nameDest", "")] + [",".join(r.split(",")[:6] + r.split(",")[7:]) for r in GOOD],
        ["missing column(s) `nameDest`"],
    ),
    "negative amount": (
        [HEADER, GOOD[0], GOOD[1].replace(",181,", ",-181,", 1), GOOD[2].replace(",181,", ",-5,", 1)],
        ["column `amount`", "2 row(s)", "first at row 2", "-181"],
    ),
    "text in numeric column": (
        [HEADER, GOOD[0], GOOD[1], GOOD[2].replace(",21182,", ",lots,")],
        ["column `oldbalanceDest`", "1 value(s)", "first at row 3", "'lots'"],
    ),
    "unknown type": (
        [HEADER, GOOD[0].replace("PAYMENT", "REFUND"), *GOOD[1:]],
        ["column `type`", "1 row(s)", "first at row 1", "REFUND"],
    ),
    "empty file": ([""], ["the file is empty"]),
    "other delimiter": ([line.replace(",", ";") for line in [HEADER, *GOOD]], ["semicolon", "expected commas"]),
    "header only": ([HEADER], ["no rows"]),
    "label out of range": (
        [HEADER, GOOD[0][: -len("0,0")] + "2,0", *GOOD[1:]],
        ["column `isFraud`", "must be 0 or 1", "first at row 1"],
    ),
    "step out of range": ([HEADER, "800" + GOOD[0][1:], *GOOD[1:]], ["column `step`", "1..744"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_fails_clearly_and_writes_nothing(tmp_path, case):
    lines, expected = BAD_FILES[case]
    source = write_csv(tmp_path, lines)
    out = tmp_path / "out" / "raw.parquet"
    with pytest.raises(DataValidationError) as info:
        acquire(str(source), out, rows=0, seed=1)
    message = str(info.value)
    assert str(source) in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert not out.exists()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_failure_after_good_batches_leaves_no_output(tmp_path, monkeypatch):
    """A bad row far into a file (a later batch) still leaves nothing behind, and an old output survives."""
    import lib.data.acquire

    monkeypatch.setattr(lib.data.acquire, "_CSV_BLOCK_BYTES", 256)
    rows = GOOD * 40 + [GOOD[0].replace("9839.64", "-1")]
    source = write_csv(tmp_path, [HEADER, *rows])
    out = tmp_path / "raw.parquet"
    out.write_bytes(b"previous output")
    with pytest.raises(DataValidationError, match=f"first at row {len(rows)}"):
        acquire(str(source), out, rows=0, seed=1)
    assert out.read_bytes() == b"previous output"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_parquet_with_wrong_column_type(tmp_path):
    source = tmp_path / "bad.parquet"
    data = pacsv.read_csv(REAL_SAMPLE).drop_columns(["amount"])
    data = data.append_column("amount", pa.array(["x"] * data.num_rows))
    pq.write_table(data, source)
    with pytest.raises(DataValidationError, match="wrong type"):
        acquire(str(source), tmp_path / "out.parquet", rows=0, seed=1)

"""Per-row test predictions (tasks/row_predictions.py): read back as written, byte-identical twice."""

import numpy as np

from tasks.row_predictions import read_test_rows, write_test_rows


def test_rows_read_back_and_the_file_is_byte_identical_when_written_again(tmp_path):
    preds = {"entropy:0": np.array([1, 0, 1]), "layer:1": np.array([0, 0, 1])}
    first = write_test_rows(tmp_path / "a", [1, 0, 0], preds, regression=False).read_bytes()
    labels, back = read_test_rows(tmp_path / "a" / "test_rows.npz")
    assert labels.tolist() == [1, 0, 0] and {k: v.tolist() for k, v in back.items()} == {k: v.tolist() for k, v in preds.items()}
    import zipfile

    # no member carries the time of writing, so a second write is byte-identical
    assert {m.date_time for m in zipfile.ZipFile(tmp_path / "a" / "test_rows.npz").infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert write_test_rows(tmp_path / "b", [1, 0, 0], preds, regression=False).read_bytes() == first
    regression = write_test_rows(tmp_path / "c", [0.5, 2.0], {"point:0": np.array([0.25, 1.5])}, regression=True)
    assert read_test_rows(regression)[1]["point:0"].dtype == np.float32

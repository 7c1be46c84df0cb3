import json

import h5py
import numpy as np
import pytest

from clearct.common.errors import ClearctError
from clearct.io.features import ScanFeatures, read_features, write_features


def _features(n_slices=4, windows=(("lung", -1500, 500), ("abdomen", -175, 275))):
    w = len(windows)
    return ScanFeatures(
        feats=np.random.default_rng(0).normal(size=(n_slices * w, 8)).astype(np.float16),
        slice_index=np.repeat(np.arange(n_slices), w),
        z_mm=np.repeat(np.arange(n_slices) * 2.5, w),
        window=np.tile(np.arange(w), n_slices),
        scan_id="S1",
        patient_id="P1",
        encoder="vit_conv_small",
        weights_sha256="0" * 64,
        image_size=224,
        windows=list(windows),
    )


def test_round_trip_and_contract_fields(tmp_path):
    path = write_features(tmp_path / "S1.h5", _features())
    with h5py.File(path) as h5:
        assert h5["slice_index"].dtype == np.int32 and h5["window"].dtype == np.int8
        assert h5["z_mm"].dtype == np.float32 and h5["feats"].dtype == np.float16
        assert json.loads(h5.attrs["windows"]) == [["lung", -1500.0, 500.0], ["abdomen", -175.0, 275.0]]
        assert h5.attrs["embed_dim"] == 8 and "clearct_version" in h5.attrs
    back = read_features(path)
    assert back.feats.shape == (8, 8) and back.windows[1] == ("abdomen", -175.0, 275.0)
    assert [p.name for p in tmp_path.iterdir()] == ["S1.h5"]  # no temp file left behind


def test_nan_and_foreign_files_are_clear_errors(tmp_path):
    f = _features()
    f.feats = f.feats.astype(np.float32)
    f.feats[0, 0] = np.nan
    write_features(tmp_path / "nan.h5", f)
    with pytest.raises(ClearctError, match="NaN"):
        read_features(tmp_path / "nan.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = [1]
    with pytest.raises(ClearctError, match="missing feats"):
        read_features(tmp_path / "other.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ClearctError, match="junk.h5"):
        read_features(tmp_path / "junk.h5")

"""DICOM to 8-bit RGB: windowing modes, MONOCHROME1 inversion, rescale, and errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _datasets_layouts import grey_of, needs_pydicom, write_dicom

from fmprobe.datasets.dicom import DicomSource, conversion_tag, dicom_to_image
from fmprobe.errors import DatasetError, ImageError


@needs_pydicom
def test_dicom_16bit_minmax_and_monochrome1_inversion(tmp_path: Path) -> None:
    ramp = np.linspace(100, 4000, 64, dtype=np.uint16).reshape(8, 8)  # 12-bit values in 16-bit words
    plain = grey_of(dicom_to_image(write_dicom(tmp_path / "m2.dcm", ramp, bits_stored=12)))
    assert plain.min() == 0 and plain.max() == 255 and plain[0, 0] == 0 and plain[-1, -1] == 255
    inverted = grey_of(dicom_to_image(write_dicom(tmp_path / "m1.dcm", ramp, "MONOCHROME1", bits_stored=12)))
    assert (inverted == 255 - plain).all()  # high values are dark in MONOCHROME1


@needs_pydicom
def test_dicom_window_rescale_and_percentile(tmp_path: Path) -> None:
    stored = np.array([[0, 990, 1040, 1080], [2000, 2000, 2000, 2000]], dtype=np.int16)
    # modality values = 2 * stored - 1000 -> -1000, 980, 1080, 1160; 3000; window centre 1080, width 161
    path = write_dicom(tmp_path / "w.dcm", stored, window=(1080, 161), rescale=(2, -1000))
    grey = grey_of(dicom_to_image(path))
    assert grey[0, 0] == 0 and grey[0, 1] == 0 and grey[0, 3] == 255 and grey[1, 0] == 255
    assert abs(int(grey[0, 2]) - 128) <= 1  # the window centre maps to mid-grey
    minmax = grey_of(dicom_to_image(path, window="minmax"))
    assert minmax[0, 0] == 0 and minmax[1, 0] == 255 and 100 < minmax[0, 2] < 140
    spike = np.full((20, 20), 500, dtype=np.uint16)
    spike[10:] = 1500
    spike[0, 0] = 60000  # a burnt-in marker: min-max would crush the tissue, percentiles clip it
    p = grey_of(dicom_to_image(write_dicom(tmp_path / "p.dcm", spike), window="percentile", percentiles=(1, 99)))
    assert p[1, 1] == 0 and p[19, 19] == 255 and p[0, 0] == 255
    assert grey_of(dicom_to_image(tmp_path / "p.dcm", window="minmax"))[19, 19] < 10
    assert conversion_tag() == "dicom-window:v1:dicom"
    assert conversion_tag("percentile", (1, 99)) == "dicom-window:v1:percentile:1-99"


@needs_pydicom
def test_dicom_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"gone\.dcm: DICOM file not found"):
        dicom_to_image(tmp_path / "gone.dcm")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom at all" * 20)
    with pytest.raises(ImageError, match=r"bad\.dcm"):
        DicomSource((bad,)).load(0)
    with pytest.raises(DatasetError, match="window mode"):
        DicomSource((bad,), window="auto")

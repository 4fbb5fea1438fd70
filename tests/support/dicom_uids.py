"""The shared CT DICOM series is anonymised down to no SOP, study or series UIDs; the DICOM-SEG and
RTSTRUCT tests need a copy that has them (what a scanner's series carries)."""

from __future__ import annotations

from pathlib import Path


def series_with_uids(dicom_dir: Path, folder: Path) -> Path:
    """Copy the series in ``dicom_dir`` into ``folder`` (created) with fresh SOP, study and series
    UIDs and a test patient; returns ``folder``."""
    import pydicom
    from pydicom.uid import CTImageStorage, generate_uid

    folder.mkdir()
    study, series = generate_uid(), generate_uid()
    for f in sorted(dicom_dir.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName = "TEST", "Test^Patient"
        ds.save_as(folder / f.name)
    return folder

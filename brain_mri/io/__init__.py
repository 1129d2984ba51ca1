"""Reading files: any image (path, bytes, PIL, array, DICOM, 16-bit) to RGB, whole scans (NIfTI, DICOM series,
zips) to volumes. Imports nothing of serving, training or evaluation."""

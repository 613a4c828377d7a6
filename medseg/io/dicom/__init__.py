"""DICOM reading: discover series in folder trees and read them as volumes."""

from medseg.io.dicom.discovery import DicomScan, DicomSeries, find_files, scan, scan_files
from medseg.io.dicom.headers import Frame, SeriesHeader, SkippedFile
from medseg.io.dicom.reader import DicomReadOptions, read_dicom, read_series
from medseg.io.dicom.stack import Problem

__all__ = [
    "DicomReadOptions",
    "DicomScan",
    "DicomSeries",
    "Frame",
    "Problem",
    "SeriesHeader",
    "SkippedFile",
    "find_files",
    "read_dicom",
    "read_series",
    "scan",
    "scan_files",
]

"""DICOM knowledge without MONAI: photographs in, SEG and TID 1500 SR out."""

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("dermpacs")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

"""facedemo: age and gender estimation from face photos, served as a JSON API."""

__all__ = ["__version__"]

__version__ = "0.1.0"

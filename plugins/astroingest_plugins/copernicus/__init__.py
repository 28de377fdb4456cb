"""Copernicus: the Climate Data Store and the Data Space Ecosystem."""

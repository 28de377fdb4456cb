"""NASA: the Exoplanet Archive (TAP) and Earthdata CMR."""

"""astroingest's built-in source plugins; each is an ordinary plugin using the public hook API."""

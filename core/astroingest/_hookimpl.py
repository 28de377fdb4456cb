"""The public @hookimpl marker."""

import pluggy

hookimpl = pluggy.HookimplMarker("astroingest")

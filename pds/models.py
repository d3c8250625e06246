"""All model loading lives here (CLIP, unCLIP decoder, student text and image encoders).

Stage modules take loaded models as arguments, so tests can pass tiny ones. Nothing here downloads
anything unless a hub name is given on purpose; tests only ever use local folders.
"""

# ----------------------------------------------------------------------------------------------------
# CLIP (embed) and unCLIP decoder (synthesize)


# ----------------------------------------------------------------------------------------------------
# student encoders (evaluate)

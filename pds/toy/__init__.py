"""The embedded default: a procedurally generated image-caption dataset (`world`) and the toy models trained on it."""

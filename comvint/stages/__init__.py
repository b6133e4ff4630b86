"""The method's stages: each builds calls for an item and turns validated replies into records."""

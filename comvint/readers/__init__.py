"""Pure parsers of the raw annotation formats (bytes/str in, records out; no IO)."""

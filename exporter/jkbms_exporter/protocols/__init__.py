"""Pure codecs: bytes <-> Reading, request builders and the encoders the simulators use."""

"""nestmtx-sidecar: Google Nest cameras as MediaMTX paths, with real-time events."""

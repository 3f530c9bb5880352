"""MediaMTX's side: the settings that wire its hooks, and its control API."""

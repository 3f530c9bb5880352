"""Google's APIs: OAuth tokens and consent, SDM commands, Pub/Sub, the command quota."""

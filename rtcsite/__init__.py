"""rtcsite: a Django Channels site for real-time media."""

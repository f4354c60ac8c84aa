"""WebRTC signaling for rooms (built by the Mesh rooms and Server rooms features)."""

"""Survivable calling: the branch's own small dialplan and voicemail for the synced accounts."""

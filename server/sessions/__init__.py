"""Sessions: one webcam peer connection each (`session`), its control channel (`control`), its
WHEP viewers (`viewers`), the registry of them all (`registry`) and giving their memory back
(`memory`)."""

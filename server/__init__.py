"""The live WebRTC avatar server (FastAPI + aiortc); imports rain_core, never the reverse."""

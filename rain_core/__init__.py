"""rain_core: the RAIN model stack and streaming engine; knows nothing of the server."""

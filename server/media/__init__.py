"""A session's media path, as objects along the data flow.

webcam track -> `camera.DrivingTrack` (latest frame wins, sampled at the session's `FrameRate`,
extracted by the session's `driving.DrivingExtractor` on the driving thread pool) ->
`pump.EnginePump` (batches of P driving images -> the model worker -> frames) ->
`avatar.AvatarTrack` (paced by `pacing.PacedVideoTrack`, a warming-up card until the first frame)
-> `relay.TrackRelay` (the page and every WHEP viewer, each reading its own copy).
"""

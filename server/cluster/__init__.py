"""Serving past one GPU on a Ray Serve cluster: `rain-avatar serve --ray [ADDRESS]`.

One Serve application of three deployments (`app.py`): the ingress (the FastAPI app, stateless,
`ingress.py`), the avatar replicas (one `Runtime` each: model worker, sessions, aiortc peers,
`avatar.py`) and the reference library (uploaded characters for every replica,
`references.py`). Requests for a session reach the replica that owns it through a Serve request
router (`routing.py`); media never goes through Ray. Nothing here is imported by the
single-box server, and `ray` is imported only on this path.
"""

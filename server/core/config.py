"""Server settings: one pydantic-settings `Settings`, read from `RAIN_*` environment variables
(and a `.env` file), overridden by the `rain-avatar serve` options.

`rain_core` never sees this class; the values it needs are passed in.
"""

from __future__ import annotations

import re
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from rain_core.options import ModelOptions
from rain_core.stream.reference_encoder import MAX_REFERENCE_PIXELS
from rain_core.weights.profiles import check_model_source

# The lowest frame rate a session may run at: a frame a second still shows a moving avatar, and
# no wait for a frame (the pacer's, the sampler's) is longer than a second.
MIN_FPS = 1.0

# A shared TURN secret shorter than this could be guessed from one credential offline.
MIN_TURN_SECRET = 16
# The WHIP ingest token (OBS's "Bearer Token"): long enough not to be guessed over HTTP.
MIN_WHIP_TOKEN = 16
MAX_WHIP_TOKEN = 512
MAX_TURN_URLS = 8
# A TURN url as written in ICE_SERVERS: scheme, host, optional port and query; nothing that
# would break out of the WHEP `Link` header's <...> (quotes, commas, angle brackets, spaces).
_TURN_URL = re.compile(r"turns?:[A-Za-z0-9.\-\[\]:]+(\?transport=(udp|tcp))?")

# The pages live beside the package in a checkout and in the Docker image (/app/web).
_CHECKOUT_WEB_DIR = Path(__file__).resolve().parents[2] / "web"


def _default_web_dir() -> Path:
    return _CHECKOUT_WEB_DIR if _CHECKOUT_WEB_DIR.is_dir() else Path.cwd() / "web"


class IceServer(BaseModel):
    """One STUN or TURN server, in the browser's `RTCIceServer` shape."""

    urls: str | list[str]
    username: str | None = None
    credential: str | None = None


class PortRange(BaseModel):
    """An inclusive range of UDP ports, written `FIRST-LAST` (e.g. `50000-50100`)."""

    model_config = ConfigDict(frozen=True)

    first: int = Field(ge=1, le=65535)
    last: int = Field(ge=1, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.first > self.last:
            raise ValueError(f"the first port {self.first} is above the last {self.last}")
        return self

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def _parse_port_range(value: object) -> object:
    """`"50000-50100"` -> `{"first": 50000, "last": 50100}`; anything else is left to the model's checks."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        first, sep, last = text.partition("-")
        if not sep or not first.strip().isdigit() or not last.strip().isdigit() or len(text) > 16:
            raise ValueError(f"a port range is written FIRST-LAST, e.g. 50000-50100 (got {text[:24]!r})")
        return {"first": int(first), "last": int(last)}
    return value


class Settings(BaseSettings):
    # Inputs stay out of error messages: one of them may be TURN_SECRET.
    model_config = SettingsConfigDict(env_prefix="RAIN_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    # Where uvicorn listens.
    HOST: str = "127.0.0.1"
    PORT: int = Field(8000, ge=1, le=65535)
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # The model and its fast paths (rain_core.options.ModelOptions, declared there once): a profile
    # (default: official when the weights hold it complete, else the bundled demo), its weights or
    # random weights (tiny + random is what tests use), the device, dtype, G, P, seed, and each fast
    # path auto/on/off. Each is read from its own variable, RAIN_PROFILE, RAIN_COMPILE, ... (see
    # `_FlatModelSource`). An auto fast path is checked against eager at warm-up and switched off,
    # with the reason in /api/health, if it fails, differs or is slower; compiling and CUDA graphs are
    # prepared in the background while the server serves eager, an "on" one for batch size 1 before
    # the server answers, so that its failure stops the start.
    MODEL: ModelOptions = ModelOptions()
    # torch's CPU threads; default on a CPU device: one core fewer than the machine has, so that
    # the media path (codecs, driving extraction) keeps a core and the OpenMP workers never spin
    # against it (on 2 cores, 2 torch threads made a step ~5x slower under WebRTC load); the
    # decode thread shares that core (see rain_core.stream.fast_paths.default_torch_threads).
    TORCH_THREADS: int | None = Field(None, ge=1)
    # Character used until a session picks one (a path on the server); none: the bundled demo
    # model's sample character when that model runs, else a plain grey card.
    REFERENCE_IMAGE: Path | None = None

    # Sessions.
    MAX_SESSIONS: int = Field(4, ge=1)
    MAX_BATCH: int = Field(8, ge=1)  # most sessions stepped in one batched UNet call
    FPS: float = Field(16.0, ge=MIN_FPS)  # a session's frame rate until it asks for another
    MAX_FPS: float = Field(30.0, ge=MIN_FPS)
    DRIVING_THREADS: int = Field(4, ge=1)  # thread pool of the driving-signal extraction
    SILENCE_TIMEOUT: float = Field(20.0, gt=0)  # seconds without a webcam frame before a session is reaped
    MAX_VIEWERS: int = Field(8, ge=1)  # WHEP viewers per session
    # The longest delay of a session's voice behind its microphone (seconds): it follows the video
    # latency up to this, and its buffer holds this much (about 190 kB a second).
    VOICE_MAX_DELAY: float = Field(5.0, gt=0, le=60)
    # Threads computing the mattes of `alpha=matte` viewers (one frame at a time per session).
    MATTE_THREADS: int = Field(2, ge=1)

    # References (character images).
    MAX_UPLOAD_BYTES: int = Field(10_000_000, ge=1)
    # The reference encoder's own limit, or less (it refuses larger images whatever the setting).
    MAX_REFERENCE_PIXELS: int = Field(MAX_REFERENCE_PIXELS, ge=64, le=MAX_REFERENCE_PIXELS)
    MAX_REFERENCES: int = Field(64, ge=1)  # kept in memory; the least recently used go first
    REFERENCE_TTL: float = Field(3600.0, gt=0)  # seconds an unused reference is kept
    # Also kept as files here (content-addressed, same count and expiry), read by every process
    # that has it: on a cluster, a directory every node mounts, so an upload outlives any node.
    REFERENCES_DIR: Path | None = None

    # WebRTC.
    ICE_SERVERS: list[IceServer] = []  # JSON list; empty: host candidates only, no STUN
    # A TURN server of our own (coturn with `use-auth-secret`, the compose `turn` profile): its
    # urls (JSON list of turn:/turns: urls) and the secret shared with it. Set, the server mints a
    # credential valid TURN_TTL seconds for each page load, WHEP viewer and its own connections
    # (server/rtc/turn.py); the secret never leaves the server.
    TURN_URLS: list[str] = Field([], max_length=MAX_TURN_URLS)
    TURN_SECRET: SecretStr | None = None
    TURN_TTL: int = Field(3600, ge=60, le=86400)
    # The bearer token of `POST /whip` (WHIP ingest, e.g. OBS's Settings -> Stream -> WHIP). Unset,
    # WHIP is open on a loopback HOST only (a camera on the same machine) and refused otherwise.
    WHIP_TOKEN: SecretStr | None = None
    ICE_LOOPBACK: bool = False  # add 127.0.0.1 host candidates (loopback-only hosts, tests)
    PUBLIC_IP: IPv4Address | IPv6Address | None = None  # advertised beside each host candidate
    # Every ICE host candidate (sessions and viewers) binds a UDP port in this range (a firewall
    # or a container publishes just these); none: the kernel picks. Exhausted: offers get 503.
    ICE_PORT_RANGE: Annotated[PortRange | None, NoDecode, BeforeValidator(_parse_port_range)] = None
    # The webcam under packet loss (server/rtc/receiver.py): the camera side needs only the newest
    # frame, so a gap is NACKed again every NACK_INTERVAL s (NACK_TRIES times at most) and, once it
    # has held frames back KEYFRAME_AFTER s, a keyframe is asked for and jumped to. Off: aiortc's own.
    LOSS_REPAIR: bool = True
    NACK_INTERVAL: float = Field(0.04, ge=0.005, le=1.0)
    NACK_TRIES: int = Field(5, ge=1, le=50)
    KEYFRAME_AFTER: float = Field(0.12, ge=0.02, le=5.0)

    # Recordings of sessions (MP4). A recording stops, finished and playable, at the first limit.
    RECORDINGS_DIR: Path = Path("recordings")  # created when the first recording starts
    MAX_RECORDING_SECONDS: float = Field(1800.0, gt=0)  # the longest one recording runs
    MAX_RECORDINGS_BYTES: int = Field(5_000_000_000, ge=1_000_000)  # all files in RECORDINGS_DIR together
    RECORDING_TTL: float = Field(3600.0, gt=0)  # seconds a session's files are kept after it ends

    # A Ray Serve cluster (`serve --ray`, server/cluster/); off: the single box.
    RAY: bool = False  # serve on Ray Serve: a local cluster, unless RAY_ADDRESS names one
    RAY_ADDRESS: str | None = Field(None, min_length=1, max_length=256)  # "auto", "HOST:6379"
    RAY_REPLICAS: int = Field(1, ge=1)  # avatar replicas, unless RAY_MIN/MAX_REPLICAS autoscale them
    RAY_MIN_REPLICAS: int | None = Field(None, ge=1)
    RAY_MAX_REPLICAS: int | None = Field(None, ge=1)
    # Seconds the autoscaler waits before adding a replica, and before taking one away (which
    # then drains: RAY_DRAIN_TIMEOUT).
    RAY_UPSCALE_DELAY: float = Field(30.0, ge=0, le=3600)
    RAY_DOWNSCALE_DELAY: float = Field(300.0, ge=0, le=86_400)
    RAY_GPUS_PER_REPLICA: float | None = Field(None, ge=0)  # default: 1 on CUDA, 0 on a CPU
    RAY_CPUS_PER_REPLICA: float = Field(1.0, ge=0)
    RAY_INGRESS_REPLICAS: int = Field(1, ge=1)
    # Placement of avatar replicas: at most this many on one node, and/or only on nodes that
    # offer this custom resource (`ray start --resources '{"rain_avatar": 1}'`; one unit each).
    RAY_MAX_REPLICAS_PER_NODE: int | None = Field(None, ge=1)
    RAY_REPLICA_RESOURCE: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")
    # Seconds the ingress waits for a replica's answer to a quick call (stats, health, ...) before
    # answering without it: a lost node must not hang the API.
    RAY_CALL_TIMEOUT: float = Field(3.0, gt=0, le=60)
    # Seconds an avatar replica taken out of service (scale-down, redeploy) serves its live
    # sessions on before it closes them (its pages are told at once); 0: close them at once.
    RAY_DRAIN_TIMEOUT: float = Field(600.0, ge=0, le=86_400)
    # Join a cluster that does not require Ray's token authentication (Ray's API runs any code
    # for whoever reaches it): refused unless this is set.
    RAY_INSECURE_CLUSTER: bool = False

    # HTTP.
    CORS_ORIGINS: list[str] = []  # JSON list; empty: no CORS headers at all
    WEB_DIR: Path = Field(default_factory=_default_web_dir)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        flat = _FlatModelSource(settings_cls, env_settings, dotenv_settings)
        return init_settings, flat, env_settings, dotenv_settings, file_secret_settings

    @field_validator("RAY_ADDRESS")
    @classmethod
    def _ray_address(cls, address: str | None) -> str | None:
        # Ray Client's proxy did not start a server for this driver under token authentication
        # (Ray 2.60), and Serve advises against Ray Client: the driver runs on a node instead.
        if address is not None and address.lower().startswith("ray://"):
            raise ValueError(
                "RAY_ADDRESS: Ray Client addresses (ray://) are not supported; run `rain-avatar serve --ray "
                "HEAD:6379` on a machine that is a node of the cluster (or in its head container)"
            )
        return address

    @field_validator("TURN_URLS")
    @classmethod
    def _turn_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if len(url) > 256 or not _TURN_URL.fullmatch(url):
                raise ValueError(
                    "TURN_URLS are turn: or turns: urls, HOST[:PORT] with an optional ?transport=udp or tcp, "
                    f"e.g. turn:203.0.113.7:3478?transport=udp (got {url[:64]!r})"
                )
        return urls

    @field_validator("TURN_SECRET")
    @classmethod
    def _turn_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and not MIN_TURN_SECRET <= len(secret.get_secret_value()) <= 512:
            raise ValueError(
                f"TURN_SECRET must be {MIN_TURN_SECRET} to 512 characters (e.g. `openssl rand -hex 32`); "
                f"it has {len(secret.get_secret_value())}"
            )
        return secret

    @field_validator("WHIP_TOKEN")
    @classmethod
    def _whip_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not MIN_WHIP_TOKEN <= len(token.get_secret_value()) <= MAX_WHIP_TOKEN:
            raise ValueError(
                f"WHIP_TOKEN must be {MIN_WHIP_TOKEN} to {MAX_WHIP_TOKEN} characters (e.g. `openssl rand -hex 32`); "
                f"it has {len(token.get_secret_value())}"
            )
        return token

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_model_options(cls, data: object) -> object:
        """The model options named flat, as their RAIN_* variables name them (`WEIGHTS`, `COMPILE`: a Ray
        Serve config's `args`, keyword callers), go into MODEL over what it has."""
        if isinstance(data, dict):
            flat = {name: data.pop(name.upper()) for name in ModelOptions.model_fields if name.upper() in data}
            if flat:
                model = data.get("MODEL") or {}
                if isinstance(model, ModelOptions):
                    model = model.model_dump(exclude_unset=True)
                data["MODEL"] = {**model, **flat}
        return data

    @model_validator(mode="after")
    def _check_model_source(self) -> Settings:
        model = self.MODEL
        check_model_source(model.profile, model.weights, random_weights=model.random_weights)
        if self.FPS > self.MAX_FPS:
            raise ValueError(f"FPS={self.FPS} exceeds MAX_FPS={self.MAX_FPS}")
        if bool(self.TURN_URLS) != (self.TURN_SECRET is not None):
            raise ValueError("TURN_URLS and TURN_SECRET go together: set both (a TURN server of our own) or neither")
        if self.RAY_ADDRESS is not None:
            self.RAY = True
        if (self.RAY_MIN_REPLICAS is None) != (self.RAY_MAX_REPLICAS is None):
            raise ValueError("RAY_MIN_REPLICAS and RAY_MAX_REPLICAS autoscale together: set both or neither")
        if self.RAY_MIN_REPLICAS is not None and self.RAY_MIN_REPLICAS > self.RAY_MAX_REPLICAS:
            raise ValueError(
                f"RAY_MIN_REPLICAS={self.RAY_MIN_REPLICAS} exceeds RAY_MAX_REPLICAS={self.RAY_MAX_REPLICAS}"
            )
        return self


class _FlatModelSource(PydanticBaseSettingsSource):
    """`MODEL`'s fields from their own variables, `RAIN_<FIELD>` (RAIN_PROFILE, RAIN_COMPILE, ...), in the
    environment or the .env file (the environment first): the names they had before `MODEL` nested
    them, which deployments and the docs use."""

    def __init__(self, settings_cls, env_settings, dotenv_settings):
        super().__init__(settings_cls)
        self.sources = [env_settings, dotenv_settings]

    def get_field_value(self, field, field_name):  # every value comes from __call__
        return None, field_name, False

    def __call__(self) -> dict:
        prefix = self.config.get("env_prefix", "")
        model = {}
        for source in reversed(self.sources):  # the environment last: it wins
            variables = getattr(source, "env_vars", {}) or {}
            for name in ModelOptions.model_fields:
                value = variables.get(f"{prefix}{name}".lower())
                if value is not None:
                    model[name] = value
        return {"MODEL": model} if model else {}


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment (what `uvicorn --factory server.main:create_app` uses)."""
    return Settings()

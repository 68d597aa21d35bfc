"""Server settings: one pydantic-settings `Settings`, read from `RAIN_*` environment variables
(and a `.env` file), overridden by the `rain-avatar serve` options.

`rain_core` never sees this class; the values it needs are passed in.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rain_core.stream.reference_encoder import MAX_REFERENCE_PIXELS
from rain_core.weights.profiles import check_model_source

# The lowest frame rate a session may run at: a frame a second still shows a moving avatar, and
# no wait for a frame (the pacer's, the sampler's) is longer than a second.
MIN_FPS = 1.0

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
    model_config = SettingsConfigDict(env_prefix="RAIN_", env_file=".env", extra="ignore")

    # Where uvicorn listens.
    HOST: str = "127.0.0.1"
    PORT: int = Field(8000, ge=1, le=65535)
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # The model: a profile (default: official when WEIGHTS holds it complete, else the bundled
    # demo), and its weights or random weights (tiny + random is what tests use).
    PROFILE: str | None = None
    WEIGHTS: Path | None = None
    RANDOM_WEIGHTS: bool = False
    DEVICE: str | None = None  # default: cuda if available, else cpu
    DTYPE: Literal["float32", "float16", "bfloat16"] | None = None  # default: float16 on CUDA, float32 on CPU
    # Fast paths (auto: those measured faster on the device, see rain_core.stream.fast_paths).
    # COMPILE=on compiles at start-up (minutes on a CPU the first time, cached on disk after).
    COMPILE: Literal["auto", "on", "off"] = "auto"
    CUDA_GRAPHS: Literal["auto", "on", "off"] = "auto"
    CHANNELS_LAST: Literal["auto", "on", "off"] = "auto"
    DECODE_THREAD: Literal["auto", "on", "off"] = "auto"
    BFLOAT16_DECODER: Literal["auto", "on", "off"] = "auto"
    # Reference attention: one shared reference K/V merged by log-sum-exp, or per-frame copies.
    REFERENCE_ATTENTION: Literal["merged", "concat"] = "merged"
    GROUPS: int | None = Field(None, ge=1)
    PER_GROUP: int | None = Field(None, ge=1)
    SEED: int | None = None
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
    ICE_LOOPBACK: bool = False  # add 127.0.0.1 host candidates (loopback-only hosts, tests)
    PUBLIC_IP: IPv4Address | IPv6Address | None = None  # advertised beside each host candidate
    # Every ICE host candidate (sessions and viewers) binds a UDP port in this range (a firewall
    # or a container publishes just these); none: the kernel picks. Exhausted: offers get 503.
    ICE_PORT_RANGE: Annotated[PortRange | None, NoDecode, BeforeValidator(_parse_port_range)] = None

    # Recordings of sessions (MP4). A recording stops, finished and playable, at the first limit.
    RECORDINGS_DIR: Path = Path("recordings")  # created when the first recording starts
    MAX_RECORDING_SECONDS: float = Field(1800.0, gt=0)  # the longest one recording runs
    MAX_RECORDINGS_BYTES: int = Field(5_000_000_000, ge=1_000_000)  # all files in RECORDINGS_DIR together
    RECORDING_TTL: float = Field(3600.0, gt=0)  # seconds a session's files are kept after it ends

    # A Ray Serve cluster (`serve --ray`, server/cluster/); off: the single box.
    RAY: bool = False  # serve on Ray Serve: a local cluster, unless RAY_ADDRESS names one
    RAY_ADDRESS: str | None = Field(None, min_length=1, max_length=256)  # "auto", "HOST:6379", "ray://HOST:10001"
    RAY_REPLICAS: int = Field(1, ge=1)  # avatar replicas, unless RAY_MIN/MAX_REPLICAS autoscale them
    RAY_MIN_REPLICAS: int | None = Field(None, ge=1)
    RAY_MAX_REPLICAS: int | None = Field(None, ge=1)
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
    # Join a cluster that does not require Ray's token authentication (Ray's API runs any code
    # for whoever reaches it): refused unless this is set.
    RAY_INSECURE_CLUSTER: bool = False

    # HTTP.
    CORS_ORIGINS: list[str] = []  # JSON list; empty: no CORS headers at all
    WEB_DIR: Path = Field(default_factory=_default_web_dir)

    @model_validator(mode="after")
    def _check_model_source(self) -> Settings:
        check_model_source(self.PROFILE, self.WEIGHTS, random_weights=self.RANDOM_WEIGHTS)
        if self.FPS > self.MAX_FPS:
            raise ValueError(f"FPS={self.FPS} exceeds MAX_FPS={self.MAX_FPS}")
        if self.RAY_ADDRESS is not None:
            self.RAY = True
        if (self.RAY_MIN_REPLICAS is None) != (self.RAY_MAX_REPLICAS is None):
            raise ValueError("RAY_MIN_REPLICAS and RAY_MAX_REPLICAS autoscale together: set both or neither")
        if self.RAY_MIN_REPLICAS is not None and self.RAY_MIN_REPLICAS > self.RAY_MAX_REPLICAS:
            raise ValueError(
                f"RAY_MIN_REPLICAS={self.RAY_MIN_REPLICAS} exceeds RAY_MAX_REPLICAS={self.RAY_MAX_REPLICAS}"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment (what `uvicorn --factory server.main:create_app` uses)."""
    return Settings()

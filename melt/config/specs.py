"""Validated, immutable specs for the three file kinds melt reads.

- a **device config** (``device_configs/*.yaml``): how to reach one device and
  where its sensors live;
- an **experiment** (``experiments/*.yaml``): devices x frameworks x models x
  workloads, repetitions and pacing;
- a **framework recipe** lives with its framework (``frameworks/<name>/``).

Specs are frozen pydantic models: once loaded nothing deeper re-checks them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BeforeValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

NonEmptyStr = Annotated[str, Field(min_length=1)]

# Device paths reach the device's shell (sampled files are word-split there):
# absolute, and only the characters sysfs names use; globs add * ? [ ] !.
_PATH_CHARS = re.compile(r"/[A-Za-z0-9_.,:+@%=/-]*")
_GLOB_CHARS = re.compile(r"/[A-Za-z0-9_.,:+@%=/*?\[\]!-]*")


def _device_path(v: str) -> str:
    if not _PATH_CHARS.fullmatch(v) or "/../" in v + "/":
        raise ValueError(f"{v!r} is not an absolute device path of letters, digits and ._,:+@%=-")
    return v


def _device_glob(v: str) -> str:
    if not _GLOB_CHARS.fullmatch(v) or "/../" in v + "/":
        raise ValueError(f"{v!r} is not an absolute device path pattern (letters, digits, "
                         "._,:+@%=- and the glob characters * ? [ ] !)")
    return v


DevicePath = Annotated[str, AfterValidator(_device_path)]
DeviceGlob = Annotated[str, AfterValidator(_device_glob)]


class Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------- devices


class AdbSpec(Spec):
    """How to reach an Android device through the adb server."""

    serial: str | None = Field(None, description="adb serial; defaults to `connect` when given")
    connect: str | None = Field(None, description="host:port to `adb connect` to (network or virtual phones)")
    server_host: str = "127.0.0.1"
    server_port: int = Field(5037, ge=1, le=65535)
    reconnect_timeout_s: PositiveFloat = Field(
        20.0, description="how long to wait for a device that dropped off to come back"
    )


class IosSpec(Spec):
    """An iPhone: which one, and melt's benchmark host app on it."""

    udid: str | None = Field(None, description="the phone's UDID; default: the only iPhone attached")
    bundle_id: NonEmptyStr = Field("org.melt.bench", description="bundle id of melt's benchmark host app")
    app: str | None = Field(None, description="the built app (.app folder or .ipa) to install before a run")
    virtual: str | None = Field(
        None, description="a virtual iPhone's loopback address (melt virtual start ios); unset: a real "
                          "iPhone through pymobiledevice3")
    max_thermal_state: Literal["nominal", "fair", "serious"] = Field(
        "nominal", description="cool-down: wait before each job until iOS reports this thermal state "
                               "or a cooler one (with the cooldown section's timeout and poll)")


class JumpSpec(Spec):
    """A bastion the connection goes through (``ssh -J``); its host key is checked too."""

    host: NonEmptyStr
    port: int = Field(22, ge=1, le=65535)
    user: str | None = Field(None, description="default: the board's user")
    key_file: str | None = None


class SshSpec(Spec):
    """How to reach a Linux board over SSH (key authentication; host keys are checked)."""

    host: NonEmptyStr
    port: int = Field(22, ge=1, le=65535)
    user: str | None = Field(None, description="default: the user running melt")
    key_file: str | None = Field(
        None, description="private key; default: the agent, ~/.ssh/id_*, and melt's own key")
    use_agent: bool = True
    password_env: str | None = Field(
        None, description="name of an environment variable holding a password (discouraged; "
                          "the password itself never goes into a file, a log or a result)")
    jump: JumpSpec | None = None
    connect_timeout_s: PositiveFloat = 10.0
    reconnect_timeout_s: PositiveFloat = Field(
        20.0, description="how long to keep trying when the connection dropped")
    path: str = Field(
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/cuda/bin",
        description="PATH of the clean environment commands run in")

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not v.replace("_", "a").isalnum():
            raise ValueError("must be the NAME of an environment variable, not a password")
        return v


class EndpointSpec(Spec):
    """An OpenAI-compatible server reached over HTTP(S): ``/v1/chat/completions``, streamed.

    The API key is never in the config: ``api_key_env`` names the environment
    variable that holds it, read when the device is opened.
    """

    base_url: NonEmptyStr = Field(description="the API's root, e.g. https://api.example.com/v1")
    model: NonEmptyStr = Field(description="the model name the server expects in each request")
    api_key_env: str | None = Field(
        None, description="NAME of the environment variable holding the API key (sent as a bearer "
                          "token; the key itself never goes into a file, a log or a result)")
    timeout_s: PositiveFloat = Field(60.0, description="longest wait to connect, or for the next byte")
    max_concurrency: PositiveInt = Field(4, description="requests in flight at once, at most")
    verify_tls: bool = Field(True, description="check the server's certificate (https)")
    ca_file: str | None = Field(None, description="CA bundle to check it against (default: the system's)")
    retries: Annotated[int, Field(ge=0, le=10)] = Field(
        0, description="retries of a request refused with HTTP 429 or 5xx, or whose connection failed "
                       "before any token (each counted in the job's `retries`)")
    retry_backoff_s: Annotated[float, Field(ge=0, le=60)] = Field(
        1.0, description="wait before a retry, doubled each time (a Retry-After up to 60 s wins)")
    max_response_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = Field(
        16 << 20, description="the most melt reads of one response")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an http:// or https:// URL with a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("give the URL without credentials, query or fragment (the key goes in "
                             "api_key_env)")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not (v.replace("_", "a").isalnum() and not v[0].isdigit()):
            raise ValueError("must be the NAME of an environment variable, not a key")
        return v


class BatterySpec(Spec):
    """Fuel gauge files and their units (vendors differ)."""

    dir: DevicePath = "/sys/class/power_supply/battery"
    current_unit: Literal["uA", "mA", "auto"] = Field(
        "auto", description="unit of current_now; auto: read from its magnitude when melt connects")
    current_sign: Literal["positive-discharging", "negative-discharging"] = "negative-discharging"
    voltage_unit: Literal["uV", "mV"] = "uV"
    update_period_s: PositiveFloat | None = Field(
        None, description="how often the gauge refreshes; default: measured from the trace")
    averaging_s: Annotated[float, Field(ge=0)] = Field(
        0.0, description="window current_now is averaged over (0: instantaneous)")
    gain_error_pct: Annotated[float, Field(ge=0, le=50)] = Field(
        1.0, description="the gauge's accuracy: a bound on its gain error (percent)")


class RailSpec(Spec):
    """A power rail the sampler reads every tick (INA3221 on a Jetson, a lab shunt ...).

    Either ``power_file``, or ``voltage_file`` and ``current_file`` (an INA3221
    under hwmon reports bus volts in ``inN_input`` and amps in ``currN_input``).
    """

    name: NonEmptyStr
    power_file: DevicePath | None = Field(None, description="file holding the rail's instantaneous power")
    unit: Literal["uW", "mW", "W"] = "mW"
    voltage_file: DevicePath | None = Field(None, description="bus voltage file (hwmon inN_input)")
    voltage_unit: Literal["uV", "mV", "V"] = "mV"
    current_file: DevicePath | None = Field(None, description="current file (hwmon currN_input)")
    current_unit: Literal["uA", "mA", "A"] = "mA"
    total: bool = Field(
        False, description="counts into the device's power (power_w): the input rail, or each "
                           "rail of a set that adds up to the module's power")
    refresh_ms: PositiveFloat | None = Field(
        None, description="the sensor's effective refresh (INA3221: averaging x conversion "
                          "time x channels); a phase shorter than this is below its resolution")

    @model_validator(mode="after")
    def _files(self) -> "RailSpec":
        if (self.power_file is None) == (self.voltage_file is None or self.current_file is None):
            raise ValueError("give `power_file`, or both `voltage_file` and `current_file`")
        return self


class IdleReuseSpec(Spec):
    """When a device's idle baseline, measured in an earlier job, is used again."""

    max_age_s: Annotated[float, Field(ge=0)] = Field(600.0, description="re-measure after this long")
    max_temp_change_c: Annotated[float, Field(ge=0)] = Field(
        1.0, description="re-measure when the temperature moved more than this since"
    )
    max_battery_change_pct: Annotated[float, Field(ge=0)] = Field(
        1.0, description="re-measure when the battery level moved more than this since"
    )


class TelemetrySpec(Spec):
    """Where the device's sensors are; the same paths on a phone and the virtual one."""

    enabled: bool = Field(True, description="sample while jobs run (the on-device runner)")
    sample_hz: PositiveFloat = 50.0
    slow_every: PositiveInt = Field(
        5, description="read battery level, temperatures, frequencies and CPU use every Nth tick"
    )
    idle_s: Annotated[float, Field(ge=0)] = Field(
        2.0, description="idle baseline sampled before a job (seconds; 0 skips it)"
    )
    idle_reuse: IdleReuseSpec | None = Field(
        default_factory=IdleReuseSpec,
        description="reuse a device's idle baseline while its state holds (null: sample one before every job)",
    )
    battery: BatterySpec | None = None
    tail_s: Annotated[float, Field(ge=0, le=120)] | None = Field(
        None, description="keep sampling this long after the last phase (default: one refresh and "
                          "averaging window of a battery with a declared update_period_s, else 0)")
    thermal_zones: list[str] | Literal["all"] = "all"
    thermal_dir: DevicePath = "/sys/class/thermal"
    cpufreq_glob: DeviceGlob = "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"
    cooling_devices: bool = Field(True, description="sample thermal cooling-device states (throttling)")
    skin_zone: str | None = Field(None, description="thermal zone type used for cool-down and temp_* metrics")
    rails: list[RailSpec] = Field(default_factory=list)
    odpm: Literal["auto", "off"] = Field(
        "auto", description="read On-Device Power Monitor energy counters at each of the runner's "
                           "marks (the start and end of each step, not the process's phase marks)"
    )
    tegrastats_interval_ms: PositiveInt | None = Field(
        None, description="run tegrastats beside the job at this interval (Jetson)"
    )
    clock_probes: PositiveInt = Field(12, description="round trips for the host/device clock offset")


class CooldownSpec(Spec):
    """Wait until the device is below a temperature before each job."""

    max_temp_c: float = 40.0
    timeout_s: PositiveFloat = 600.0
    poll_s: PositiveFloat = 2.0
    zone: str | None = Field(
        None, description="thermal zone type to watch, or `battery`; default: telemetry.skin_zone, "
                          "else the battery, else the hottest zone"
    )
    on_timeout: Literal["fail", "run"] = Field("fail", description="what to do when it never cools")
    on_low_battery: Literal["stop", "pause"] = Field(
        "stop", description="below min_battery_pct: stop, or pause until it is charged back"
    )
    battery_pause_timeout_s: PositiveFloat = 3600.0


class StateSpec(Spec):
    """Device state set before the jobs and always restored afterwards (null: leave it)."""

    screen: Literal["on", "off"] | None = None
    brightness: Annotated[int, Field(ge=0, le=255)] | None = None
    charging: Literal["enabled", "disabled"] | None = None
    stay_awake: bool | None = None
    airplane: bool | None = Field(None, description="rooted devices, or Android 11+ `cmd connectivity`")
    governor: str | None = Field(None, description="CPU governor for every core (rooted devices)")
    nvpmodel: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Jetson power mode id (`nvpmodel -m N`; needs root or passwordless sudo)")


class DeviceSpec(Spec):
    """One device: what it is and how melt reaches it."""

    name: NonEmptyStr
    kind: Literal["local", "android", "linux", "jetson", "ios", "endpoint"]
    description: str = ""
    workdir: str | None = Field(None, description="where binaries, models and job files go on the device")
    build_profile: str = Field(
        "auto", description="llama.cpp build profile whose binaries run here; auto: chosen by the "
                            "device's kind and CPU ABI (ro.product.cpu.abi on a phone)")
    build_on: Literal["host", "device"] = Field(
        "host", description="where llama.cpp is compiled: host (here, then pushed) or device (on the "
                            "board itself over SSH, with its own compiler and CUDA; kind linux or jetson)")
    adb: AdbSpec | None = None
    ssh: SshSpec | None = None
    ios: IosSpec | None = Field(None, description="kind ios: the iPhone and melt's app on it")
    endpoint: EndpointSpec | None = Field(
        None, description="kind endpoint: an OpenAI-compatible server the streamed workloads run against")
    telemetry: TelemetrySpec = TelemetrySpec()
    cooldown: CooldownSpec | None = None
    state: StateSpec = StateSpec()
    min_battery_pct: float | None = Field(None, ge=0, le=100)
    virtual: dict[str, Any] | None = Field(
        None, description="present on melt's virtual devices: their model parameters (data is simulated)"
    )

    @model_validator(mode="after")
    def _build_on_board(self) -> "DeviceSpec":
        if self.build_on == "device" and self.kind not in ("linux", "jetson"):
            raise ValueError(f"build_on: device needs a board reached over SSH (kind linux or jetson), "
                             f"not kind {self.kind}")
        return self

    @property
    def simulated(self) -> bool:
        return self.virtual is not None

    @model_validator(mode="after")
    def _endpoint(self) -> "DeviceSpec":
        if (self.kind == "endpoint") != (self.endpoint is not None):
            raise ValueError("kind endpoint needs an `endpoint:` section, and only it has one")
        return self


# ------------------------------------------------------------------ experiments


class FrameworkRef(Spec):
    name: NonEmptyStr = "llama.cpp"
    source: str | None = Field(None, description="local path or git+URL@REF; default: the recipe's pinned source")
    profile: str | None = Field(None, description="build profile; default: the device's")
    binaries: str | None = Field(
        None, description="a folder of prebuilt binaries to use instead of building (relative to the experiment)"
    )


class ModelRef(Spec):
    """A model: a file, a catalogue name (``melt model list``), or melt's tiny random model."""

    name: NonEmptyStr
    path: str | None = None
    tiny_seed: int | None = Field(None, description="make melt's tiny model with this seed instead of a file")
    catalog: str | None = Field(None, description="a model of melt's catalogue (melt model list), fetched once into the cache")
    quantization: str | None = None

    @field_validator("tiny_seed")
    @classmethod
    def _seed(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError("must be >= 0")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "ModelRef":
        given = [k for k in ("path", "tiny_seed", "catalog") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `path`, `tiny_seed` or `catalog`"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self


def _as_list(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


def _sweep(minimum: int):
    def check(values: list[int]) -> list[int]:
        if not values:
            raise ValueError("must not be empty")
        for v in values:
            if v < minimum:
                raise ValueError(f"must be {'> 0' if minimum == 1 else f'>= {minimum}'} (got {v})")
        return values

    return check


#: A scalar or a list of integers to sweep; a scalar is a list of one.
IntList = Annotated[list[int], BeforeValidator(_as_list), AfterValidator(_sweep(1))]
NonNegIntList = Annotated[list[int], BeforeValidator(_as_list), AfterValidator(_sweep(0))]
TextList = Annotated[list[NonEmptyStr], BeforeValidator(_as_list), Field(min_length=1)]


class BenchWorkload(Spec):
    """A llama-bench sweep; every list is swept, like llama-bench itself."""

    kind: Literal["bench"]
    name: NonEmptyStr
    n_prompt: NonNegIntList = [64]
    n_gen: NonNegIntList = [16]
    threads: IntList | None = None
    batch: IntList | None = None
    depth: NonNegIntList = [0]
    repetitions: PositiveInt = Field(1, description="llama-bench -r inside one job")


class GenerateWorkload(Spec):
    """Prompt text in, completion out; the timing lines give the metrics."""

    kind: Literal["generate"]
    name: NonEmptyStr
    prompt: TextList
    n_predict: IntList = [32]
    threads: IntList | None = None
    ctx_size: PositiveInt = 512
    seed: int = 42
    temperature: Annotated[float, Field(ge=0)] = 0.0


class _ServedWorkload(Spec):
    """llama-server on the device, driven from the host through a forwarded port."""

    name: NonEmptyStr
    threads: IntList | None = None
    n_predict: IntList = Field([64], description="tokens per completion (each turn, each request)")
    ctx_size: PositiveInt = 4096
    temperature: Annotated[float, Field(ge=0)] = 0.0
    seed: int = 42
    ignore_eos: bool = Field(False, description="always generate n_predict tokens")
    cache_prompt: bool = Field(True, description="let the server reuse the context it already holds")
    startup_timeout_s: PositiveFloat = Field(120.0, description="for the server to load the model and answer")
    stall_timeout_s: PositiveFloat = Field(60.0, description="longest wait for the next streamed token")


class ServeWorkload(_ServedWorkload):
    """Streamed completions of one prompt: measured TTFT, inter-token latency, end to end."""

    kind: Literal["serve"]
    prompt: NonEmptyStr = "The quick brown fox jumps over the lazy dog."
    requests: PositiveInt = Field(3, description="completions per job")
    concurrency: IntList = Field([1], description="requests in flight at once (server slots)")


class ConversationWorkload(_ServedWorkload):
    """MELT's multi-turn conversations replayed as a chat app does (history kept)."""

    kind: Literal["conversation"]
    conversation: Annotated[int, Field(ge=0)] | None = Field(
        None, description="index of one conversation (0..49); default 0 unless `sample` is given")
    sample: PositiveInt | None = Field(None, description="replay this many conversations drawn with `seed`")
    turns: PositiveInt | None = Field(None, description="replay only the first N user turns")

    @model_validator(mode="after")
    def _pick(self) -> "ConversationWorkload":
        from melt.prompts import pick_conversations

        if self.conversation is not None and self.sample is not None:
            raise ValueError("give `conversation` or `sample`, not both")
        index = self.conversation if self.sample is not None or self.conversation is not None else 0
        pick_conversations(index=None if self.sample is not None else index, sample=self.sample,
                           seed=self.seed)
        return self


class SustainedWorkload(_ServedWorkload):
    """Completions back to back for a set time: the throughput series and throttling."""

    kind: Literal["sustained"]
    n_predict: IntList = Field([128], description="tokens per completion")
    duration_s: PositiveFloat = Field(60.0, description="keep generating this long")
    window_s: PositiveFloat = Field(5.0, description="width of the tok/s windows")


class QualityWorkload(Spec):
    """llama-perplexity on the device: perplexity over a text, and KL divergence against a reference."""

    kind: Literal["quality"]
    name: NonEmptyStr
    text: NonEmptyStr = Field("kjv-genesis", description="a shipped text's name or a file (relative to the "
                                                         "experiment)")
    ctx: PositiveInt = Field(512, description="tokens per chunk; the second half of each is scored")
    chunks: PositiveInt | None = Field(None, description="chunks to evaluate; default: as many as "
                                                         "max_scored_tokens allows")
    max_scored_tokens: PositiveInt = Field(
        512, description="bound on scored tokens: base logits take about 0.5 MB per scored token for a "
                         "262k vocabulary (266 MB at 512 for Gemma 3)")
    reference: NonEmptyStr | None = Field(
        None, description="'host' (this model on this machine's build) or another model of the experiment: "
                          "adds KL divergence and same-top-token figures")
    threads: IntList | None = None


Workload = Annotated[
    Union[BenchWorkload, GenerateWorkload, ServeWorkload, ConversationWorkload, SustainedWorkload,
          QualityWorkload],
    Field(discriminator="kind"),
]


class AdaptiveSpec(Spec):
    """Repeat a cell beyond ``repetitions`` until its confidence interval is narrow enough."""

    metric: NonEmptyStr = Field("decode_tps", description="the metric whose interval must narrow")
    rel_half_width: PositiveFloat = Field(0.05, description="95% CI half width as a fraction of the mean")
    max_repetitions: PositiveInt = 20


class ExperimentSpec(Spec):
    """What to measure: the job matrix and its pacing."""

    name: NonEmptyStr
    description: str = ""
    devices: list[NonEmptyStr] = Field(min_length=1, description="device config names or paths")
    frameworks: list[FrameworkRef] = Field(default_factory=lambda: [FrameworkRef()], min_length=1)
    models: list[ModelRef] = Field(min_length=1)
    workloads: list[Workload] = Field(min_length=1)
    repetitions: PositiveInt = 3
    warmup: Annotated[int, Field(ge=0)] = 1
    timeout_s: PositiveFloat = Field(600.0, description="per job")
    adaptive: AdaptiveSpec | None = Field(None, description="optional adaptive repetition per cell")
    rerun_throttled: Annotated[int, Field(ge=0)] = Field(
        0, description="measure a job again (up to this many times) when it throttled"
    )

    @field_validator("models")
    @classmethod
    def _unique_models(cls, v: list) -> list:
        names = [m.name for m in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique (results are kept by name): {', '.join(dupes)}")
        return v

    @field_validator("workloads")
    @classmethod
    def _unique_names(cls, v: list) -> list:
        names = [w.name for w in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"workload names must be unique: {', '.join(dupes)}")
        return v

    @model_validator(mode="after")
    def _references_are_models(self) -> "ExperimentSpec":
        models = [m.name for m in self.models]
        for w in self.workloads:
            ref = getattr(w, "reference", None)
            if w.kind == "quality" and ref is not None and ref != "host" and ref not in models:
                raise ValueError(f"workload '{w.name}': reference '{ref}' is neither 'host' nor a model of "
                                 f"this experiment ({', '.join(models)})")
        return self

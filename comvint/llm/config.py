"""Validated, frozen LLM settings (built once from the pipeline options)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from comvint.images import known_formula

BACKENDS = ("offline", "openai")
MODES = ("online", "batch")
RESPONSE_FORMATS = ("json_schema", "json_object", "text")


class ConfigError(ValueError):
    """Settings that cannot run together (reported as a usage error before the job starts)."""


@dataclasses.dataclass(frozen=True)
class LLMConfig:
    """Everything about how stages talk to a model. Never holds the API key."""

    backend: str = "offline"
    base_url: str | None = None
    model: str = "gpt-4o-mini"
    stage_models: tuple[tuple[str, str], ...] = ()
    temperature: float = 0.7
    stage_temperatures: tuple[tuple[str, float], ...] = (("verify", 0.0),)
    max_tokens: int = 1024
    timeout: float = 60.0
    max_retries: int = 5
    concurrency: int = 512
    rpm: float = 0.0
    tpm: float = 0.0
    workers: int = 1  # the worker processes sharing the job's budgets (and an endpoint's stated limits)
    response_format: str = "json_schema"
    prices: tuple[tuple[str, float, float], ...] = ()
    cache_dir: str | None = None
    api_key_secret: str | None = None  # a secret version's *name* (projects/P/secrets/S/versions/V), never the key
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    mode: str = "online"  # online: one request per call; batch: the Batch API (files + batches), half the price
    batch_poll_s: float = 60.0
    batch_max_requests: int = 50_000
    batch_max_mb: float = 200.0
    batch_discount: float = 0.5  # the Batch API's price cut on both token kinds (OpenAI: 50%)
    max_cost_usd: float = 0.0  # 0: no cap
    run_id: str = ""  # names this run's cost budget within a worker process (several runs may share one process)
    image_root: str | None = None  # where the pictures are (local or gs://); each item's "image" path is under it
    image_stages: tuple[str, ...] = ()  # the stages whose calls carry the picture
    image_detail: str = "low"
    image_max_px: int = 0  # 0: the detail's own fit
    image_tokens: int = 0  # tokens per picture for a model with no known formula
    server_cmd: str | None = None  # a self-hosted server each worker machine starts ("... --port {port} ...")
    server_startup_s: float = 600.0

    def __post_init__(self) -> None:
        checks = [
            (self.mode in MODES, f"--llm_mode must be one of {MODES}"),
            (
                self.mode == "online" or self.backend == "openai",
                "--llm_mode batch needs --llm openai (the offline engine answers at once)",
            ),
            (
                self.mode == "online" or bool(self.cache_dir),
                "--llm_mode batch needs --cache_dir: the batches' ledger and replies live there, "
                "so a killed run resumes",
            ),
            (
                self.batch_poll_s > 0 and self.batch_max_requests >= 1 and self.batch_max_mb > 0,
                "batch poll, size and MB limits must be positive",
            ),
            (0.0 <= self.batch_discount < 1.0, "--llm_batch_discount must be in [0, 1)"),
            (self.max_cost_usd >= 0, "--llm_max_cost_usd must be >= 0"),
            (
                not self.max_cost_usd or self.backend == "offline" or not self.unpriced_models(),
                f"--llm_max_cost_usd needs a --llm_prices entry for {', '.join(self.unpriced_models())}",
            ),
            (self.backend in BACKENDS, f"backend must be one of {BACKENDS}"),
            (self.response_format in RESPONSE_FORMATS, f"response_format must be one of {RESPONSE_FORMATS}"),
            (
                all(0.0 <= t <= 2.0 for t in (self.temperature, *dict(self.stage_temperatures).values())),
                "temperature must be in [0, 2]",
            ),
            (self.max_tokens > 0, "max_tokens must be positive"),
            (self.timeout > 0, "timeout must be positive"),
            (self.max_retries >= 0, "max_retries must be >= 0"),
            (self.concurrency >= 1, "concurrency must be >= 1"),
            (self.rpm >= 0 and self.tpm >= 0, "rpm and tpm must be >= 0"),
            (0 < self.backoff_base <= self.backoff_cap, "need 0 < backoff_base <= backoff_cap"),
            (not self.image_stages or bool(self.image_root), "--llm_image_stages needs --image_root"),
            (set(self.image_stages) <= set(IMAGE_STAGES), f"--llm_image_stages: stages are {', '.join(IMAGE_STAGES)}"),
            (
                not self.server_cmd or (self.backend == "openai" and not self.base_url and self.mode == "online"),
                "--llm_server_cmd needs --llm openai, online mode, and no --llm_base_url (the server's URL is its own)",
            ),
            (
                not self.server_cmd or "{port}" in self.server_cmd,
                "--llm_server_cmd must contain {port}, where the server listens",
            ),
            (self.server_startup_s > 0, "--llm_server_startup_s must be positive"),
            (self.image_detail in ("low", "high", "auto"), "--llm_image_detail must be low, high or auto"),
            (
                self.image_max_px >= 0 and self.image_tokens >= 0,
                "--llm_image_max_px and --llm_image_tokens must be >= 0",
            ),
            (
                self.backend == "offline" or self.image_tokens > 0 or not self.unknown_image_models(),
                f"no image-token formula for {', '.join(self.unknown_image_models())}, which --llm_prices or --llm_tpm "
                "needs: "
                "pass --llm_image_tokens (tokens per picture)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def endpoint(self) -> str | None:
        """What names the endpoint in a cache key: the base URL, or the command of a self-hosted server (its port
        changes from run to run, what it serves does not)."""
        return self.base_url or (f"server:{self.server_cmd}" if self.server_cmd else None)

    def unknown_image_models(self) -> list[str]:
        """The models of picture-carrying stages whose image tokens have no known formula but are needed: the model
        is priced (the cost cap and estimate count pictures) or a tokens-per-minute budget is set."""
        priced = {name for name, _, _ in self.prices}
        return sorted(
            {
                model
                for stage in self.image_stages
                if not known_formula(model := self.model_for(stage)) and (model in priced or self.tpm)
            }
        )

    def unpriced_models(self) -> list[str]:
        """The models the stages use that the price table does not list."""
        priced = {name for name, _, _ in self.prices}
        return sorted({self.model, *dict(self.stage_models).values()} - priced)

    def estimated_cost(self, model: str, prompt_tokens: int, max_tokens: int) -> float:
        """What a request may cost at most: its prompt and a full ``max_tokens`` completion (0 without a price)."""
        return self.cost(model, prompt_tokens, max_tokens) or 0.0

    def model_for(self, stage: str) -> str:
        """The model of ``stage`` (a per-stage override, else the default model)."""
        return dict(self.stage_models).get(stage, self.model)

    def temperature_for(self, stage: str) -> float:
        """The sampling temperature of ``stage`` (a per-stage override, else the default)."""
        return dict(self.stage_temperatures).get(stage, self.temperature)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """Estimated cost in the price table's currency (with the batch discount in batch mode), or None if the
        model has no price."""
        for name, per_m_in, per_m_out in self.prices:
            if name == model:
                full = (prompt_tokens * per_m_in + completion_tokens * per_m_out) / 1e6
                return full * (1.0 - self.batch_discount) if self.mode == "batch" else full
        return None


def parse_stage_pairs(text: str, flag: str) -> tuple[tuple[str, str], ...]:
    """``"verify=a,reformulate=b"`` -> ``(("reformulate", "b"), ("verify", "a"))``, sorted."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise ValueError(f"bad {flag} {text!r}: want stage=value,...")
    return tuple(sorted((k.strip(), v.strip()) for k, v in pairs))


def parse_stage_models(text: str) -> tuple[tuple[str, str], ...]:
    """``"verify=gpt-4o-mini,reformulate=m"`` -> per-stage model overrides."""
    return parse_stage_pairs(text, "--llm_stage_models")


def parse_stage_temperatures(text: str) -> tuple[tuple[str, float], ...]:
    """``"verify=0,generate=1.0"`` -> per-stage temperature overrides."""
    try:
        return tuple((stage, float(value)) for stage, value in parse_stage_pairs(text, "--llm_stage_temperatures"))
    except ValueError:
        raise ValueError(f"bad --llm_stage_temperatures {text!r}: want stage=number,...") from None


def parse_prices(text: str) -> tuple[tuple[str, float, float], ...]:
    """``"gpt-4o=2.5:10,m=0.1:0.2"`` (per 1M input:output tokens) -> a price table."""
    table = []
    for item in (i for i in text.split(",") if i.strip()):
        try:
            model, rest = item.rsplit("=", 1)
            per_in, per_out = (float(v) for v in rest.split(":"))
        except ValueError:
            raise ValueError(f"bad --llm_prices entry {item!r}: want model=in:out") from None
        table.append((model.strip(), per_in, per_out))
    return tuple(table)


IMAGE_STAGES = ("generate", "complicate", "verify", "verify_reformulated", "reformulate")
DEFAULT_IMAGE_STAGES = ("verify", "verify_reformulated")


def parse_image_stages(text: str, image_root: str | None) -> tuple[str, ...]:
    """``--llm_image_stages``: '' (the judges when ``--image_root`` is set), 'all', 'none', or stage names."""
    text = text.strip()
    if not text:
        return DEFAULT_IMAGE_STAGES if image_root else ()
    if text == "none":
        return ()
    return IMAGE_STAGES if text == "all" else tuple(s.strip() for s in text.split(",") if s.strip())


def worker_count(values: Mapping[str, object]) -> int:
    """How many worker processes share the job's budget: --llm_workers when set (Flink: one SDK worker per
    TaskManager), Dataflow's --max_num_workers (else --num_workers), or the local runner's --direct_num_workers
    in multi_processing mode; 1 otherwise."""
    for flag in ("llm_workers", "max_num_workers", "num_workers"):
        if values.get(flag):
            return max(1, int(values[flag]))
    if values.get("direct_running_mode") == "multi_processing" and values.get("direct_num_workers"):
        return max(1, int(values["direct_num_workers"]))
    return 1


def config_from_mapping(values: Mapping[str, object]) -> LLMConfig:
    """Build an LLMConfig from option values named like the ``--llm_*`` flags.

    ``--llm_rpm`` / ``--llm_tpm`` / ``--llm_max_cost_usd`` are the job's budgets: each worker process gets
    its share (divided by :func:`worker_count`), shared by all the stages it runs.
    """
    workers = worker_count(values)
    return LLMConfig(
        backend=str(values["llm"]),
        base_url=values.get("llm_base_url") or None,
        model=str(values["llm_model"]),
        stage_models=parse_stage_models(str(values.get("llm_stage_models") or "")),
        temperature=float(values["llm_temperature"]),
        stage_temperatures=parse_stage_temperatures(
            str(values.get("llm_stage_temperatures", "verify=0,verify_reformulated=0") or "")
        ),
        max_tokens=int(values["llm_max_tokens"]),
        timeout=float(values["llm_timeout"]),
        max_retries=int(values["llm_max_retries"]),
        concurrency=int(values["llm_concurrency"]),
        workers=workers,
        rpm=float(values.get("llm_rpm") or 0) / workers,
        tpm=float(values.get("llm_tpm") or 0) / workers,
        response_format=str(values["llm_response_format"]),
        prices=parse_prices(str(values.get("llm_prices") or "")),
        cache_dir=values.get("cache_dir") or None,
        api_key_secret=values.get("llm_api_key_secret") or None,
        mode=str(values.get("llm_mode") or LLMConfig.mode),
        batch_poll_s=float(values.get("llm_batch_poll_s") or LLMConfig.batch_poll_s),
        batch_max_requests=int(values.get("llm_batch_max_requests") or LLMConfig.batch_max_requests),
        batch_max_mb=float(values.get("llm_batch_max_mb") or LLMConfig.batch_max_mb),
        batch_discount=float(
            LLMConfig.batch_discount if values.get("llm_batch_discount") is None else values["llm_batch_discount"]
        ),
        max_cost_usd=float(values.get("llm_max_cost_usd") or 0) / workers,
        run_id=str(values.get("run_id") or ""),
        image_root=values.get("image_root") or None,
        image_stages=parse_image_stages(str(values.get("llm_image_stages") or ""), values.get("image_root") or None),
        image_detail=str(values.get("llm_image_detail") or "low"),
        image_max_px=int(values.get("llm_image_max_px") or 0),
        image_tokens=int(values.get("llm_image_tokens") or 0),
        server_cmd=values.get("llm_server_cmd") or None,
        server_startup_s=float(values.get("llm_server_startup_s") or LLMConfig.server_startup_s),
    )

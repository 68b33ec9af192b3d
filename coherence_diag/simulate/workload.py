"""Request streams: arrival times from a time-varying rate, request sizes, priorities, SLOs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coherence_diag.simulate.params import BatchJobs, TokenMix, Workload


@dataclass
class RateProfile:
    """Arrival-rate multiplier on a fine grid over [0, duration_s); injections reshape it."""

    duration_s: float
    dt_s: float
    mult: np.ndarray

    @classmethod
    def flat(cls, duration_s: float, dt_s: float = 0.05) -> RateProfile:
        n = max(1, int(np.ceil(duration_s / dt_s)))
        return cls(duration_s, dt_s, np.ones(n))

    def window(self, start_s: float, end_s: float) -> slice:
        return slice(int(max(start_s, 0.0) / self.dt_s), int(np.ceil(min(end_s, self.duration_s) / self.dt_s)))


@dataclass
class RequestBatch:
    arrival_s: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    priority: np.ndarray

    @staticmethod
    def concat(parts: list[RequestBatch]) -> RequestBatch:
        """Concatenate and sort by arrival (stable, so equal times keep input order)."""
        arr = np.concatenate([p.arrival_s for p in parts])
        order = np.argsort(arr, kind="stable")
        return RequestBatch(
            arr[order],
            np.concatenate([p.prompt for p in parts])[order],
            np.concatenate([p.output for p in parts])[order],
            np.concatenate([p.priority for p in parts])[order],
        )


def poisson_arrivals(rng: np.random.Generator, rate_rps: float, profile: RateProfile) -> np.ndarray:
    """Non-homogeneous Poisson process by inverting the cumulative intensity."""
    cum = np.concatenate([[0.0], np.cumsum(profile.mult * rate_rps * profile.dt_s)])
    edges = np.arange(len(cum)) * profile.dt_s
    edges[-1] = min(edges[-1], profile.duration_s)
    n = int(rng.poisson(cum[-1]))
    u = np.sort(rng.uniform(0.0, cum[-1], n))
    return np.interp(u, cum, edges)


def sample_tokens(
    rng: np.random.Generator, mix: tuple[TokenMix, ...], n: int, max_prompt: int, max_output: int
) -> tuple[np.ndarray, np.ndarray]:
    weights = np.array([m.weight for m in mix], dtype=float)
    comp = rng.choice(len(mix), size=n, p=weights / weights.sum())
    p_med = np.array([m.prompt_median for m in mix])[comp]
    p_sig = np.array([m.prompt_sigma for m in mix])[comp]
    o_med = np.array([m.output_median for m in mix])[comp]
    o_sig = np.array([m.output_sigma for m in mix])[comp]
    prompt = np.clip(np.rint(p_med * np.exp(p_sig * rng.standard_normal(n))), 8, max_prompt)
    output = np.clip(np.rint(o_med * np.exp(o_sig * rng.standard_normal(n))), 1, max_output)
    return prompt.astype(np.int64), output.astype(np.int64)


def sample_priorities(rng: np.random.Generator, probs: tuple[float, ...], n: int) -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum()).astype(np.int64)


def synthetic_requests(rng: np.random.Generator, wl: Workload, rate_rps: float, profile: RateProfile) -> RequestBatch:
    arrival = poisson_arrivals(rng, rate_rps, profile)
    prompt, output = sample_tokens(rng, wl.mix, len(arrival), wl.max_prompt_tokens, wl.max_output_tokens)
    return RequestBatch(arrival, prompt, output, sample_priorities(rng, wl.priority_probs, len(arrival)))


def slo_targets(wl: Workload, prompt: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slo_ms, ttft_slo_ms, client timeout in s): TTFT budget grows with the prompt, e2e with output."""
    ttft = wl.ttft_slo_base_ms + wl.ttft_slo_per_prompt_token_ms * prompt
    slo = ttft + wl.tpot_slo_ms * output
    timeout_s = np.maximum(wl.min_timeout_ms, wl.timeout_factor * slo) / 1e3
    return slo.astype(float), ttft.astype(float), timeout_s


@dataclass
class JobBatch:
    arrival_s: np.ndarray
    ref_duration_s: np.ndarray  # on an A100-40GB


def batch_jobs(rng: np.random.Generator, spec: BatchJobs, duration_s: float, rate_mult: float) -> JobBatch:
    """Waves of throughput jobs submitted on a jittered (cron-like) schedule; the wave size
    scales with the fleet like request traffic does."""
    interval = spec.mean_interval_s
    wave_t = np.arange(interval * 0.5, duration_s * 0.9, interval)
    wave_t = wave_t + rng.uniform(-0.25, 0.25, len(wave_t)) * interval
    n_waves = len(wave_t)
    per_wave = max(1, int(round(spec.per_wave * rate_mult)))
    t = np.repeat(wave_t, per_wave) + rng.uniform(0.0, 2.0, n_waves * per_wave)
    dur = spec.duration_median_s * np.exp(spec.duration_sigma * rng.standard_normal(len(t)))
    order = np.argsort(t, kind="stable")
    return JobBatch(t[order], dur[order])

"""Entity names: descriptive by default, or seeded random tokens that carry no role hints."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
NAMINGS = ("plain", "random")


@dataclass
class Names:
    pool: list[str]
    queue: list[str]
    host: list[str]
    device: list[str]
    link: list[str]
    env: list[str]


def plain_names(pools: list[str], hosts: list[str], devices: list[str], links: list[str], envs: list[str]) -> Names:
    return Names(list(pools), [f"q-{p}" for p in pools], list(hosts), list(devices), list(links), list(envs))


def random_names(plain: Names, rng: np.random.Generator) -> Names:
    """Replace every name by a unique random token (same length for all kinds, no prefixes)."""
    total = sum(len(x) for x in (plain.pool, plain.queue, plain.host, plain.device, plain.link, plain.env))
    seen: set[str] = set()
    tokens: list[str] = []
    while len(tokens) < total:
        for row in rng.choice(_ALPHABET, size=(total, 8)):
            tok = "".join(row)
            if tok[0].isalpha() and tok not in seen:  # leading letter: never parsed as a number
                seen.add(tok)
                tokens.append(tok)
                if len(tokens) == total:
                    break
    it = iter(tokens)
    return Names(*[[next(it) for _ in group] for group in (plain.pool, plain.queue, plain.host, plain.device, plain.link, plain.env)])

"""The physical fleet: pools of devices on hosts, and the links KV caches travel over."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from coherence_diag.simulate.hardware import ACCELERATORS, Accelerator
from coherence_diag.simulate.params import PoolSpec, Role, serves


@dataclass(frozen=True)
class DeviceGroup:
    """Devices an injection adds to an existing pool, possibly later and behind another link."""

    pool: str
    n_devices: int
    online_s: float = 0.0
    rack: str | None = None  # hosts in a named rack share one uplink instead of a NIC each
    uplink_gbs: float | None = None
    virtualized: bool = False


@dataclass
class Pool:
    name: str
    role: Role
    acc: Accelerator
    max_batch: int
    fifo: bool
    mig_profile: str | None
    devices: list[int] = field(default_factory=list)
    paced: bool = False  # dispatch only on scheduler ticks (see PacedDispatcher)
    autoscaled: bool = False

    def serves(self, role: str) -> bool:
        """Does this pool do `role` work (a unified pool does prefill and decode)?"""
        return serves(self.role, role)


@dataclass
class Fleet:
    pools: list[Pool] = field(default_factory=list)
    dev_name: list[str] = field(default_factory=list)
    dev_host: list[int] = field(default_factory=list)
    dev_pool: list[int] = field(default_factory=list)
    dev_online_s: list[float] = field(default_factory=list)
    dev_accel: list[Accelerator] = field(default_factory=list)  # a pool may mix accelerator classes
    host_name: list[str] = field(default_factory=list)
    host_virtualized: list[bool] = field(default_factory=list)
    host_link: list[int] = field(default_factory=list)  # -1: host never sends KV
    link_name: list[str] = field(default_factory=list)
    link_bytes_per_s: list[float] = field(default_factory=list)

    @property
    def n_devices(self) -> int:
        return len(self.dev_name)

    def pool_index(self, name: str) -> int:
        for i, p in enumerate(self.pools):
            if p.name == name:
                return i
        raise KeyError(name)

    def dev_acc(self, dev: int) -> Accelerator:
        return self.dev_accel[dev]

    def pools_with_role(self, role: Role) -> list[int]:
        return [i for i, p in enumerate(self.pools) if p.role == role]


def scaled_count(n: int, mult: float) -> int:
    return max(1, int(round(n * mult)))


def build_fleet(
    specs: tuple[PoolSpec, ...],
    role_mult: dict[str, float],
    additions: list[DeviceGroup],
    nic_bytes_per_s: float,
) -> Fleet:
    fleet = Fleet()
    hosts_of_pool: dict[str, int] = {}
    for spec in specs:
        # Specs that share a name make one pool of several accelerator classes; they must agree
        # on everything but the accelerator and the device and host counts.
        if spec.name in hosts_of_pool:
            p_idx = fleet.pool_index(spec.name)
            pool = fleet.pools[p_idx]
            if (pool.role, pool.max_batch, pool.fifo, pool.mig_profile) != (spec.role, spec.max_batch, spec.fifo, spec.mig_profile):
                raise ValueError(f"pool {spec.name!r}: specs of one pool differ in more than accelerator and size")
        else:
            fleet.pools.append(Pool(spec.name, spec.role, ACCELERATORS[spec.accelerator], spec.max_batch, spec.fifo, spec.mig_profile))
            p_idx = len(fleet.pools) - 1
            hosts_of_pool[spec.name] = 0
        acc = ACCELERATORS[spec.accelerator]
        mult = role_mult.get(spec.role, 1.0)
        n = scaled_count(spec.n_devices, mult)
        n_hosts = math.ceil(n / spec.devices_per_host)
        n_virt = 0 if spec.virtualized_hosts == 0 else min(n_hosts, scaled_count(spec.virtualized_hosts, mult))
        first = hosts_of_pool[spec.name]
        hosts_of_pool[spec.name] += n_hosts
        for h in range(n_hosts):
            host = _add_host(fleet, f"{spec.name}-n{first + h + 1:02d}", virtualized=h >= n_hosts - n_virt)
            if spec.role == "prefill":
                _attach_link(fleet, host, f"nic-{fleet.host_name[host]}", nic_bytes_per_s)
            for j in range(min(spec.devices_per_host, n - h * spec.devices_per_host)):
                _add_device(fleet, p_idx, host, j, 0.0, acc)
    for g_idx, group in enumerate(additions):
        p = fleet.pool_index(group.pool)
        spec = next(s for s in specs if s.name == group.pool)
        n = scaled_count(group.n_devices, role_mult.get(spec.role, 1.0))
        rack = group.rack or f"grp{g_idx}"
        # one rack (and uplink) per group-sized block of devices, so a larger scale adds racks
        hosts_per_rack = max(1, math.ceil(group.n_devices / spec.devices_per_host))
        for h in range(math.ceil(n / spec.devices_per_host)):
            r_idx = h // hosts_per_rack
            host = _add_host(fleet, f"{spec.name}-{rack}{r_idx + 1}-n{h % hosts_per_rack + 1:02d}", virtualized=group.virtualized)
            if spec.role == "prefill":
                if group.uplink_gbs is None:
                    _attach_link(fleet, host, f"nic-{fleet.host_name[host]}", nic_bytes_per_s)
                elif h % hosts_per_rack == 0:
                    _attach_link(fleet, host, f"uplink-{rack}{r_idx + 1}", group.uplink_gbs * 1e9)
                else:
                    fleet.host_link[host] = fleet.host_link[host - 1]
            for j in range(min(spec.devices_per_host, n - h * spec.devices_per_host)):
                _add_device(fleet, p, host, j, group.online_s, ACCELERATORS[spec.accelerator])
    return fleet


def _add_host(fleet: Fleet, name: str, virtualized: bool) -> int:
    fleet.host_name.append(name)
    fleet.host_virtualized.append(virtualized)
    fleet.host_link.append(-1)
    return len(fleet.host_name) - 1


def _new_link(fleet: Fleet, name: str, bytes_per_s: float) -> int:
    fleet.link_name.append(name)
    fleet.link_bytes_per_s.append(bytes_per_s)
    return len(fleet.link_name) - 1


def _attach_link(fleet: Fleet, host: int, name: str, bytes_per_s: float) -> None:
    fleet.host_link[host] = _new_link(fleet, name, bytes_per_s)


def _add_device(fleet: Fleet, pool: int, host: int, slot: int, online_s: float, acc: Accelerator) -> None:
    fleet.dev_name.append(f"{fleet.host_name[host]}-gpu{slot}")
    fleet.dev_accel.append(acc)
    fleet.dev_host.append(host)
    fleet.dev_pool.append(pool)
    fleet.dev_online_s.append(online_s)
    fleet.pools[pool].devices.append(len(fleet.dev_name) - 1)

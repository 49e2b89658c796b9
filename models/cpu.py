"""What the CPU offers for inference: its name and the ISA extensions that matter.

Read from /proc/cpuinfo (Linux; elsewhere the flags are empty and only fp32 is
assumed). `ONEDNN_MAX_CPU_ISA` (oneDNN's own switch, honoured by OpenVINO's CPU
plugin) caps what is reported, so a forced ISA limit is seen alike by this module,
by `--precision bf16` checks and by the kernels OpenVINO picks. That is how the
paths of CPUs we do not have are shown on one that has more (docs/models.md, "OpenVINO and bf16").
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, Optional

# oneDNN ISA names in increasing order -> the /proc/cpuinfo flags they add
_ISA_LEVELS = (
    ("AVX2", ("avx2", "fma")),
    ("AVX2_VNNI", ("avx_vnni",)),
    ("AVX512_CORE", ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("AVX512_CORE_VNNI", ("avx512_vnni",)),
    ("AVX512_CORE_BF16", ("avx512_bf16",)),
    ("AVX512_CORE_FP16", ("avx512_fp16",)),
    ("AVX512_CORE_AMX", ("amx_tile", "amx_bf16", "amx_int8")),
)
RELEVANT = frozenset(f for _, flags in _ISA_LEVELS for f in flags)


@dataclass(frozen=True)
class CpuInfo:
    """name: the CPU's model name; flags: the inference-relevant ISA flags it offers
    (after any `ONEDNN_MAX_CPU_ISA` cap); isa_cap: that cap, or ''."""

    name: str
    flags: FrozenSet[str]
    isa_cap: str = ""
    x86: bool = True

    @property
    def has_bf16(self) -> bool:
        """Native bf16 dot products: AVX512-BF16 (e.g. Zen 4, Cooper Lake) or AMX."""
        return "avx512_bf16" in self.flags or "amx_bf16" in self.flags

    @property
    def has_amx(self) -> bool:
        return "amx_tile" in self.flags and "amx_bf16" in self.flags

    @property
    def has_vnni(self) -> bool:
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    @property
    def int8_saturates(self) -> bool:
        """True where u8 x s8 int8 kernels add pairs of products in saturating 16-bit arithmetic:
        x86 without VNNI/AMX (`vpmaddubsw`: u8 * s8 pairs summed into int16). There, weights of
        8 bits can overflow the pair sum (255 * 127 * 2 > 32767); 7-bit weights cannot
        (255 * 64 * 2 = 32640). With VNNI (`vpdpbusd`) the products go straight into int32."""
        return self.x86 and not self.has_vnni

    @property
    def int8_weight_bits(self) -> int:
        """Weight bits of the int8 models this CPU runs: 7 (reduced range) where the int8
        kernels saturate, else 8."""
        return 7 if self.int8_saturates else 8

    @property
    def tier(self) -> str:
        """'amx', 'avx512-bf16', 'vnni' or 'other': the goal classes of issue #15."""
        if self.has_amx:
            return "amx"
        if self.has_bf16:
            return "avx512-bf16"
        if self.has_vnni:
            return "vnni"
        return "other"

    def describe(self) -> str:
        cap = f", capped at {self.isa_cap}" if self.isa_cap else ""
        return f"{self.name} ({self.tier}{cap})"

    def key(self) -> str:
        """Identity for caches: name, relevant flags, cap and int8 weight bits."""
        return f"{self.name}|{','.join(sorted(self.flags))}|{self.isa_cap}|w{self.int8_weight_bits}"


def cap_flags(flags: FrozenSet[str], isa_cap: str) -> FrozenSet[str]:
    """Only the flags up to and including the oneDNN ISA level `isa_cap` (e.g. 'AVX512_CORE')."""
    cap = isa_cap.strip().upper()
    if not cap or cap == "ALL":
        return flags
    names = [n for n, _ in _ISA_LEVELS]
    if cap not in names:
        return flags
    allowed = {f for n, fl in _ISA_LEVELS[:names.index(cap) + 1] for f in fl}
    return frozenset(f for f in flags if f in allowed)


def parse_cpuinfo(text: str) -> tuple[str, FrozenSet[str]]:
    """/proc/cpuinfo text -> (model name, relevant flags of the first processor)."""
    name, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split()) & RELEVANT
        if name and flags:
            break
    return name, flags


def cpu_info(cpuinfo_path: Optional[Path] = None) -> CpuInfo:
    """This machine's CPU (reads /proc/cpuinfo each call; cheap)."""
    path = Path(cpuinfo_path or "/proc/cpuinfo")
    try:
        name, flags = parse_cpuinfo(path.read_text())
    except OSError:
        name, flags = "", frozenset()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    machine = platform.machine().lower()
    return CpuInfo(name or platform.processor() or machine, cap_flags(flags, cap), cap.upper(),
                   x86=machine in ("x86_64", "amd64", "i386", "i686"))

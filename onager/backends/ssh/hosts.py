"""ssh: the `--hosts` grammar and how a host's slots get their GPUs (pure functions)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from onager.backends.gpus import gpu_groups
from onager.errors import OnagerError, UsageError

_HOST_RE = re.compile(r"(?!-)[A-Za-z0-9_.%+-]+(@(?!-)[A-Za-z0-9_.%+-]+)?")

@dataclass
class HostSpec:
    """One entry of `--hosts`: `[user@]host[:slots][:gpus=0,1]`."""

    target: str
    slots: int | None = None
    gpus: str | None = None   # "0,1", a count "4", "auto", "none", or None (use --gpus)

    @property
    def key(self) -> str:
        """A file-name-safe form of the target, for the remote directory."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", self.target)


def parse_hosts(text: str | None) -> list[HostSpec]:
    """`gpu1:4,gpu2:2:gpus=0,1,user@host3:8` -> host specs.

    Hosts are separated by commas or spaces; the ids after `gpus=` may themselves be
    separated by commas (a bare number after a `gpus=` list continues that list).
    """
    if text is None or not str(text).strip():
        raise UsageError("the ssh backend needs hosts: --hosts 'gpu1:4,gpu2:2' "
                         "(or onager config --write ssh hosts 'gpu1:4,gpu2:2')")
    tokens: list[str] = []
    for raw in re.split(r"[,\s]+", str(text).strip()):
        if not raw:
            continue
        if re.fullmatch(r"\d+(-\d+)?", raw) and tokens and re.search(r"gpus=[0-9,-]*$", tokens[-1]) and \
                not tokens[-1].endswith("gpus="):
            tokens[-1] += "," + raw
        else:
            tokens.append(raw)
    specs: list[HostSpec] = []
    seen = set()
    for token in tokens:
        parts = token.split(":")
        target = parts[0]
        if not _HOST_RE.fullmatch(target):
            raise UsageError(f"bad host {target!r} in --hosts: give [user@]host[:slots][:gpus=0,1], "
                             "host being a name or ~/.ssh/config alias")
        spec = HostSpec(target)
        for part in parts[1:]:
            if part.isdigit() and spec.slots is None:
                spec.slots = int(part)
                if spec.slots < 1:
                    raise UsageError(f"host {target!r} has {part} slots: give at least 1")
            elif part.startswith("slots=") and part[6:].isdigit() and spec.slots is None:
                spec.slots = int(part[6:])
                if spec.slots < 1:
                    raise UsageError(f"host {target!r} has {part}: give at least 1 slot")
            elif part.startswith("gpus="):
                spec.gpus = _check_gpus(part[5:], f"host {target}")
            else:
                raise UsageError(f"bad field {part!r} for host {target!r} in --hosts: "
                                 "use host:SLOTS or host:SLOTS:gpus=0,1,2 (or gpus=auto, gpus=none)")
        if target in seen:
            raise UsageError(f"host {target!r} is listed twice in --hosts: give it once with all its slots")
        seen.add(target)
        specs.append(spec)
    return specs


def _check_gpus(text: str, what: str) -> str:
    text = text.strip()
    if text in ("auto", "none") or text.isdigit():
        return text
    if re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text):
        ids: list[str] = []
        for item in text.split(","):
            first, _, last = item.partition("-")
            if last and int(last) < int(first):
                raise UsageError(f"bad gpus range {item!r} for {what}: write it low-high, e.g. 2-3")
            ids += [str(i) for i in range(int(first), int(last or first) + 1)]
        return ",".join(ids) + ("," if len(ids) == 1 else "")
    raise UsageError(f"bad gpus {text!r} for {what}: give GPU ids like 0,1,2 or 2-3 (3-3 for GPU 3 alone), "
                     "a count like 4, auto or none")


def slot_gpus(gpus: str | None, detected: list[str], slots: int | None,
              per_task: int | None, host: str, cpus: int | None = None) -> tuple[int, list[str | None]]:
    """Slots of one host and the CUDA_VISIBLE_DEVICES of each (None: not set).

    Explicit GPUs (`gpus=` / `--gpus` / `--gpus-per-task`) give each slot its own
    GPUs and at most as many slots as GPU groups. With nothing said and GPUs found by
    nvidia-smi, each slot sees one GPU (slots beyond the GPU count share them).
    """
    explicit = gpus not in (None, "auto", "none") or per_task is not None
    if gpus == "none" or (gpus is None and per_task is None and not detected):
        count = slots or cpus or 1
        return count, [None] * count
    if gpus in (None, "auto"):
        ids = list(detected)
        if not ids and per_task is None:  # auto, and none found: plain CPU slots
            count = slots or cpus or 1
            return count, [None] * count
    elif "," in gpus:
        ids = [g for g in gpus.split(",") if g]
    else:
        ids = [str(i) for i in range(int(gpus))]
    if not explicit:
        count = slots or len(ids)
        return count, [ids[i % len(ids)] for i in range(count)]
    k = int(per_task or 1)
    if k < 1:
        raise UsageError("--gpus-per-task must be at least 1")
    if len(ids) < k:
        raise OnagerError(f"host {host} has {len(ids)} GPUs ({','.join(ids) or 'none found'}), "
                          f"fewer than --gpus-per-task {k}: give gpus=0,1,.. in its --hosts entry")
    groups = gpu_groups(ids, k)
    count = min(slots, len(groups)) if slots else len(groups)
    return count, list(groups[:count])

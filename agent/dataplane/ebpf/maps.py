"""Raw access to the pinned maps, by bytes (the codecs are in `codec`): building ctypes
structures per entry costs more than the system call, and a full sync writes hundreds of
thousands of entries."""

from __future__ import annotations

import ctypes
import os
from typing import Any

from agent.dataplane.errors import DataplaneError

MAP_NAMES = (
    "picket_addr",
    "picket_endpoints",
    "picket_policy",
    "picket_named",
    "picket_transit",
    "picket_transit_home",
    "picket_sources",
    "picket_verdicts",
    "picket_drop_counts",
    "picket_config",
    "picket_pod_cidrs",
)


class Maps:
    def __init__(self, bpf: Any) -> None:
        from bcc.libbcc import lib

        self._lib = lib
        self.tables = {name: bpf[name] for name in MAP_NAMES}

    def put(self, name: str, key: bytes, value: bytes) -> None:
        if (
            self._lib.bpf_update_elem(
                self.tables[name].map_fd, ctypes.c_char_p(key), ctypes.c_char_p(value), 0
            )
            != 0
        ):
            err = ctypes.get_errno()
            raise DataplaneError(f"{name}: update failed: {os.strerror(err) if err else '?'}")

    def delete(self, name: str, key: bytes) -> None:
        self._lib.bpf_delete_elem(self.tables[name].map_fd, ctypes.c_char_p(key))

    def keys(self, name: str) -> list[bytes]:
        return [bytes(k) for k in self.tables[name]]

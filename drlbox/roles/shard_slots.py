"""The coordinator's book of a job's remote shards: which process serves which slice.

Shard processes hold no state of their own: a process that joins takes a free slot and starts
from the slot's state (the job's initial weights, or the newest snapshot). At each checkpoint
the coordinator snapshots every serving slot, so a slot whose process is lost (its health
check fails three times) goes back to its last snapshot for the next process that joins.
It knows nothing of gRPC: `connect(address)` gives a peer with `snapshot(job_id, index)`,
`healthy()` and `close()`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from drlbox.roles.interfaces import ShardState

log = logging.getLogger(__name__)
CLAIM_SECONDS = 300.0        # a joined process must be serving within this, or loses the slot
HEALTH_SECONDS = 1.0
LOST_AFTER_FAILURES = 3


@dataclass
class Slot:
    """One remote slice of the weights and who serves it."""

    index: int
    state: ShardState            # where a process that takes this slot starts from
    address: str | None = None
    serving: bool = False
    claimed_at: float = 0.0
    failures: int = 0
    peer: Any = None


class ShardSlots:
    """Slots 1..K-1 of a job (slot 0 lives in the coordinator itself); thread-safe."""

    def __init__(self, job_id: str, states: list[ShardState], connect: Callable[[str], Any]):
        self.job_id = job_id
        self._slots = [Slot(i + 1, state) for i, state in enumerate(states)]
        self._connect = connect
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if self._slots:
            threading.Thread(target=self._watch, daemon=True, name="shard-health").start()

    def claim(self, address: str) -> Slot | None:
        """A free slot for the process at `address` (the one it had, if it is the same
        process coming back), or None when every slot is taken."""
        now = time.monotonic()
        with self._lock:
            for slot in self._slots:
                if slot.address == address:
                    self._free(slot)
            for slot in self._slots:
                expired = not slot.serving and now - slot.claimed_at > CLAIM_SECONDS
                if slot.address is None or expired:
                    self._free(slot)
                    slot.address, slot.claimed_at = address, now
                    return slot
            return None

    def ready(self, index: int, address: str) -> bool:
        """The process that claimed slot `index` serves it now; False if it lost the claim."""
        with self._lock:
            slot = self._slot(index)
            if slot is None or slot.address != address:
                return False
            slot.serving, slot.failures = True, 0
            slot.peer = self._connect(address)
            log.info("job %s: shard %d served by %s", self.job_id, index, address)
            return True

    def addresses(self) -> list[str | None]:
        """The address serving each slot (None while it has no serving process)."""
        with self._lock:
            return [s.address if s.serving else None for s in self._slots]

    @property
    def complete(self) -> bool:
        """Whether every slot is served."""
        with self._lock:
            return all(s.serving for s in self._slots)

    def snapshot(self) -> list[ShardState]:
        """The newest state of every slot, fetched from the processes serving them (a slot
        that cannot answer keeps its previous state and is marked lost)."""
        with self._lock:
            slots = [(s, s.peer) for s in self._slots]
        for slot, peer in slots:
            if peer is None:
                continue
            try:
                state = peer.snapshot(self.job_id, slot.index)
            except Exception as err:  # noqa: BLE001 - any failure: the process is gone
                log.warning("job %s: shard %d did not answer a snapshot (%s)", self.job_id,
                            slot.index, err)
                with self._lock:
                    if slot.peer is peer:
                        self._free(slot)
                continue
            with self._lock:
                slot.state = state
        with self._lock:
            return [s.state for s in self._slots]

    def close(self) -> None:
        """Stop watching the slots' health and close the connections to them."""
        self._closed.set()
        with self._lock:
            for slot in self._slots:
                self._free(slot)

    # --- internals -------------------------------------------------------------------------
    def _slot(self, index: int) -> Slot | None:
        return self._slots[index - 1] if 1 <= index <= len(self._slots) else None

    def _free(self, slot: Slot) -> None:
        if slot.peer is not None:
            slot.peer.close()
        slot.address, slot.serving, slot.peer, slot.failures = None, False, None, 0

    def _watch(self) -> None:
        while not self._closed.wait(HEALTH_SECONDS):
            with self._lock:
                serving = [(s, s.peer) for s in self._slots if s.peer is not None]
            for slot, peer in serving:
                healthy = peer.healthy()
                with self._lock:
                    if slot.peer is not peer:
                        continue
                    slot.failures = 0 if healthy else slot.failures + 1
                    if slot.failures >= LOST_AFTER_FAILURES:
                        log.warning("job %s: shard %d at %s is lost; it restarts from its "
                                    "last snapshot when a shard process joins", self.job_id,
                                    slot.index, slot.address)
                        self._free(slot)

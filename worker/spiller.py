"""Spilling a store's least recently used objects, and restoring them.

A background thread (never the event loop) watches the store: above the spill threshold,
or when an allocation is waiting for room, it writes unpinned objects, least recently used
first, to the ``SpillTarget``; small ones are fused into one file per batch. The scheduler
is told (and answers) before the memory is released, so a reader always finds the object
either in memory or in the spill file. A failing target leaves objects in memory, logs the
error, reports it in the store summary, and is retried with backoff.
"""
from __future__ import annotations

import logging
import threading
import time

from graphstore.core import protocol as msg
from graphstore.core.spill import SpillTarget

logger = logging.getLogger("graphstore.worker.spill")

#: Objects below this size are fused with others into one spill file.
FUSE_BELOW = 8 * 1024 * 1024
#: A fused spill file holds at most this many bytes.
FUSED_FILE_BYTES = 64 * 1024 * 1024


class Spiller:
    def __init__(self, store, target: SpillTarget, runtime, worker_tag: str):
        self.store = store
        self.target = target
        self.runtime = runtime
        self.worker_tag = worker_tag
        self.stats = {"spilled_bytes": 0, "spilled_objects": 0, "spill_seconds": 0.0,
                      "restored_bytes": 0, "restored_objects": 0, "restore_seconds": 0.0,
                      "spill_errors": 0, "last_spill_error": None, "spill_url": target.url}
        self._wake = threading.Condition()
        self._wanted = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="graphstore-spill",
                                        daemon=True)
        self._thread.start()

    def request(self, room: int) -> None:
        """Ask for a spill round (``room``: bytes an allocation waits for)."""
        with self._wake:
            self._wanted = max(self._wanted, room)
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._wake:
                self._wake.wait(timeout=max(backoff, 0.5))
                if self._stopped:
                    return
                wanted, self._wanted = self._wanted, 0
            try:
                if self.spill(wanted):
                    self.stats["last_spill_error"] = None   # the target works again
                backoff = 0.0
            except Exception as exc:  # the target failed: keep objects, retry later
                self.stats["spill_errors"] += 1
                self.stats["last_spill_error"] = f"{type(exc).__name__}: {exc}"
                logger.error("spilling to %s failed: %s; objects stay in memory",
                             self.target.url, exc)
                backoff = min(max(backoff * 2, 0.5), 10.0)

    def spill(self, room: int = 0) -> int:
        """Spill until the store is below its threshold and ``room`` bytes are free."""
        store = self.store
        spilled = 0
        while True:
            need = store.spill_need(room)
            if need <= 0:
                return spilled
            batch = self._pick(need)
            if not batch:
                return spilled
            spilled += self._spill_batch(batch)

    def _pick(self, need: int) -> list:
        batch, total = [], 0
        for entry in self.store.lru_candidates():
            if batch and (entry.size >= FUSE_BELOW or total + entry.size > FUSED_FILE_BYTES):
                break
            pinned = self.store.pin(entry.id)
            if pinned is None:
                continue
            batch.append(pinned)
            total += entry.size
            # Small objects: keep filling the file past what is needed, so a stream of
            # small puts spills in few large writes.
            if entry.size >= FUSE_BELOW or total >= max(need, FUSE_BELOW):
                break
        return batch

    def _spill_batch(self, batch: list) -> int:
        start = time.perf_counter()
        wall_start = time.time()
        copied = [e for e in batch if e.spilled_at is not None]
        if copied:
            # Restored objects still have their spill copy: just release the memory.
            for entry in copied:
                path, offset = entry.spilled_at
                self.runtime.request(msg.ObjectsSpilled(
                    path, [[entry.id, offset, entry.size]], self.target.is_local),
                    timeout=60)
                self.store.release_spilled(entry.id, entry)
            batch = [e for e in batch if e.spilled_at is None]
            if not batch:
                return sum(e.size for e in copied)
        path = self.target.new_path(self.worker_tag)
        views, entries, offset = [], [], 0
        for entry in batch:
            view = self.runtime.mappings.region(entry.name, entry.size, populate=True)
            views.append(view)
            entries.append([entry.id, offset, entry.size])
            offset += entry.size
        try:
            self.target.write(path, views)
        except BaseException:
            for entry in batch:
                self.store.unpin(entry)
            raise
        finally:
            for view in views:
                view.release()
        freed = self.runtime.request(msg.ObjectsSpilled(path, entries, self.target.is_local),
                                     timeout=60)
        for entry in batch:
            self.store.release_spilled(entry.id, entry)
        if len(freed) == len(batch):
            self.target.delete([path])
        self.runtime.spans.add("spill", _what(batch), wall_start, time.time(), offset,
                               path)
        self.stats["spilled_bytes"] += offset
        self.stats["spilled_objects"] += len(batch)
        self.stats["spill_seconds"] += time.perf_counter() - start
        return offset

    def restore(self, object_id: bytes, path: str, offset: int, size: int) -> str:
        """Read a spilled object back into the store (one copy); return its segment."""
        start = time.perf_counter()
        wall_start = time.time()
        entry = self.store.allocate(object_id, size)
        if entry.sealed:
            return entry.name            # restored meanwhile by another reader
        # Mapped lazily: the readers fault the fresh pages in on several cores at once.
        view = self.runtime.mappings.region(entry.name, size)
        try:
            self.target.read_into(path, offset, view)
        except BaseException:
            self.store.free(object_id, reusable=True)
            raise
        finally:
            view.release()
        entry.spilled_at = (path, offset)
        self.store.seal(object_id)
        self.runtime.spans.add("restore", object_id.hex(), wall_start, time.time(), size,
                               path)
        self.stats["restored_bytes"] += size
        self.stats["restored_objects"] += 1
        self.stats["restore_seconds"] += time.perf_counter() - start
        return entry.name

    def summary(self) -> dict:
        stats = dict(self.stats)
        for kind in ("spill", "restore"):
            seconds = stats[f"{kind}_seconds"]
            moved = stats["spilled_bytes" if kind == "spill" else "restored_bytes"]
            stats[f"{kind}_throughput"] = moved / seconds if seconds else 0.0
        return stats


def _what(batch: list) -> str:
    """A spill span's name: the object's id, or how many objects one file holds."""
    return batch[0].id.hex() if len(batch) == 1 else f"{len(batch)} objects"

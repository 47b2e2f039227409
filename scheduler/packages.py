"""The cluster's runtime_env packages, in the scheduler's state machine. No I/O.

A package (a ``working_dir`` or ``py_modules`` zip, ``graphstore/core/packages.py``) is
an object in the object store, registered under its content URI by the process that put
it. The scheduler keeps the URI -> object table and holds every registered object itself
(as it holds a detached actor's), so a package lives as long as the cluster: jobs come
and go, and the next one with the same files uploads nothing. Packages are small next to
the store, and a running cluster rarely sees many distinct ones; ``graphstore stop``
(or the end of a local cluster) frees them with everything else.

Mixed into ``SchedulerState`` (``state.py``), whose objects and counts it shares.
"""
from __future__ import annotations

from graphstore.core import packages
from graphstore.core import protocol as msg
from graphstore.scheduler.entities import DETACHED_HOLDER, ERROR


class PackagesMixin:
    """Package handlers of ``SchedulerState``."""

    def _init_packages(self) -> None:
        #: Package URI -> the id of the object holding its zip.
        self.packages: dict[str, bytes] = {}
        self.counts["packages_uploaded"] = 0
        self.counts["package_bytes_uploaded"] = 0

    def lookup_package(self, m: msg.LookupPackage) -> bool:
        """Is ``m.uri`` stored (an uploader skips the upload when it is)?"""
        return m.uri in self.packages

    def register_package(self, peer_id: bytes, m: msg.RegisterPackage) -> bool:
        """``m.object_id`` (put by ``peer_id`` just before) holds package ``m.uri``:
        hold it for the cluster's life. Returns True for a new package, False when the
        URI was known (a concurrent upload won; the second object is left to its
        uploader's refs)."""
        packages.uri_digest(m.uri)            # a malformed URI is the sender's error
        if m.uri in self.packages:
            return False
        obj = self.objects.get(m.object_id)
        if obj is None or obj.state == ERROR or peer_id not in obj.holders:
            raise ValueError(f"package {m.uri}: object {m.object_id.hex()} is not one the "
                             f"sender holds (put it first)")
        self._hold(DETACHED_HOLDER, obj)
        self.packages[m.uri] = m.object_id
        self.counts["packages_uploaded"] += 1
        self.counts["package_bytes_uploaded"] += m.size
        return True

    def package_object(self, m: msg.GetPackage) -> bytes | None:
        """The id of the object holding package ``m.uri``, or None if unknown."""
        return self.packages.get(m.uri)

"""The graphstore worker service (installed as ``graphstore.worker``)."""

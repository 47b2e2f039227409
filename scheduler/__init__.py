"""The graphstore scheduler service (installed as ``graphstore.scheduler``)."""

"""The foundation every graphstore process shares: the wire and what travels on it.

Messages (``protocol``), connections (``comm/``), TLS and the cluster token, settings
(``config``), pickling (``serialization``, ``task_args``, ``object_ref``), shared-memory
segments (``shm``), spill targets (``spill``), host identity (``node``), process lifecycle
(``lifecycle``, ``loop_thread``) and task-graph export (``graph_export``).

Nothing here imports the runtime, the client API or the services: they build on this.
"""

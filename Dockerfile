# graphstore's image: the scheduler, the workers and in-cluster drivers all run it
# (deploy/helm/graphstore; docs/deployment.md). Build from the repository's root:
#
#   docker build -t graphstore:0.1.0 .
#   docker build -t graphstore:0.1.0-dask --build-arg EXTRAS=dask .
#
# Drivers must run the same Python and graphstore as the image: functions travel pickled.
ARG PYTHON_VERSION=3.11

# -- a wheel of the source tree ------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY graphstore ./graphstore
COPY scheduler ./scheduler
COPY worker ./worker
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- the image ------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim
# Optional extras to install with graphstore, comma-separated (dask, joblib). Spilling to
# S3 needs none: s3fs is one of graphstore's own dependencies.
ARG EXTRAS=""
# graphviz: the status page's task-graph pictures. tini: a PID 1 that passes signals on
# and reaps the worker's task and actor processes. Not pinned: the base image's Debian
# release fixes their versions, and its security updates should come in with a rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz tini \
    && rm -rf /var/lib/apt/lists/*
# The wheel built above, pinned by being the only one; its dependencies as pyproject.toml
# bounds them.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    wheel="$(ls /wheels/graphstore-*.whl)" \
    && pip install --no-cache-dir "${wheel}${EXTRAS:+[$EXTRAS]}"
# The user the chart runs as (podSecurityContext.runAsUser): not root, a home of its own.
RUN groupadd --system --gid 10001 graphstore \
    && useradd --system --uid 10001 --gid graphstore --create-home \
       --home-dir /home/graphstore --shell /usr/sbin/nologin graphstore
USER 10001:10001
WORKDIR /home/graphstore
ENV PYTHONUNBUFFERED=1
# Scheduler, status page, a worker's peer server (the chart's defaults).
EXPOSE 6380 8265 7001
ENTRYPOINT ["/usr/bin/tini", "--", "graphstore"]
CMD ["--help"]

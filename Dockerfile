# syntax=docker/dockerfile:1
# The server and node-agent image that the Helm chart runs (charts/trainpool: the
# default image is trainpool:<appVersion>, and appVersion is this package's version).
# From the repository root:
#
#   docker build -t trainpool:0.1.0 .
#
# then load it into the cluster (kind load docker-image trainpool:0.1.0), or push it
# to a registry and point the chart there (docs/KUBERNETES.md, "The image").
#
# It holds what `trainpool server --backend kubernetes` and `trainpool agent` import:
# the package with its kubernetes and agent extras. No Ray, no PyTorch: the server
# talks to the Kubernetes API and training runs in the jobs' own images.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scheduler ./scheduler
COPY agents ./agents
COPY quota ./quota
COPY values ./values
# Wheels of the package and of everything it needs; the final stage installs only these.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[kubernetes,agent]"

FROM python:3.11-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="trainpool" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="trainpool server and node agent"

# The chart runs every pod as uid/gid 10001 (runAsUser, runAsGroup, fsGroup); the image
# names the same user so that `docker run` without the chart is not root either.
RUN groupadd --system --gid 10001 trainpool \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
       --shell /usr/sbin/nologin trainpool

# Compiled at install time: the chart's root filesystem is read-only, so nothing is
# written next to the code at run time (PYTHONDONTWRITEBYTECODE keeps Python from trying).
# The wheels are bind-mounted from the build stage (BuildKit), so no layer keeps them.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    PIP_DISABLE_PIP_VERSION_CHECK=1 pip install --no-cache-dir --no-index --find-links /wheels "trainpool[kubernetes,agent]==${VERSION}"

# HOME is the chart's writable /tmp (an emptyDir): matplotlib's and the CLI's caches.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

USER 10001:10001
WORKDIR /tmp
# The server's API (the chart's server.port); the agent's probe and metrics ports are
# on the host network.
EXPOSE 8642
ENTRYPOINT ["trainpool"]
CMD ["--help"]

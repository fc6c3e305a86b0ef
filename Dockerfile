# Flow in two stages: build wheels (Flow and every dependency) with the build tools, then install
# them into a slim runtime image that has no compiler, no pip cache and no source tree.
#
#   docker build -t flow .                        # the default
#   docker build -t flow --build-arg EXTRAS=otel .  # with OpenTelemetry (OTEL_EXPORTER_OTLP_ENDPOINT)
ARG PYTHON=python:3.11-slim

FROM ${PYTHON} AS build
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY dsl dsl
COPY engine engine
COPY workers workers
COPY web web
# Every dependency at the exact version of constraints.txt (what the tests ran with).
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels -c constraints.txt "$(ls /wheels/flow_engine-*.whl)${EXTRAS:+[$EXTRAS]}" \
 && cp constraints.txt /wheels/

FROM ${PYTHON}
ARG EXTRAS=""
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FLOW_DATA_DIR=/home/flow/.flow
RUN useradd --create-home --uid 10001 flow
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels -c /wheels/constraints.txt \
        "$(ls /wheels/flow_engine-*.whl)${EXTRAS:+[$EXTRAS]}" \
 && rm -rf /wheels
USER flow
WORKDIR /home/flow
COPY --chown=flow workflows workflows
# 3030: the web app and API (flow serve, flow up); 9100: FLOW_METRICS_PORT of the other processes.
EXPOSE 3030 9100
# Every process stops gracefully on SIGTERM (docker stop); give workers their grace period with
# `docker stop -t 40` or compose's stop_grace_period.
STOPSIGNAL SIGTERM
CMD ["flow", "up"]

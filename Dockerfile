# Build a wheel in one stage, install it in a slim runtime stage.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dsl dsl
COPY engine engine
COPY workers workers
COPY web web
RUN pip wheel --no-deps --wheel-dir /wheels . && pip wheel --wheel-dir /wheels "$(ls /wheels/*.whl)"

FROM python:3.11-slim
RUN useradd --create-home flow
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER flow
WORKDIR /home/flow
COPY --chown=flow workflows workflows
EXPOSE 3030
CMD ["flow", "up"]
